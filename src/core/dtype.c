/* dtype sizes and the exported conversions (the kernels inline the same code). */
#include "internal.h"
#include "act_math.h"

size_t unswag_dtype_size(unswag_dtype dtype) {
  switch (dtype) {
    case UNSWAG_F32: return 4;
    case UNSWAG_F16:
    case UNSWAG_BF16: return 2;
    default: return 0;
  }
}

float unswag_f16_to_f32(uint16_t h) { return us_f16_to_f32(h); }
uint16_t unswag_f32_to_f16(float f) { return us_f32_to_f16(f); }
float unswag_bf16_to_f32(uint16_t b) { return us_bf16_to_f32(b); }
uint16_t unswag_f32_to_bf16(float f) { return us_f32_to_bf16(f); }

/*
 * element_math.cuh - one element's value as the CPU library computes it, for the
 * CUDA kernel files that write activation outputs (kernels.cu, stochastic.cu):
 * element bits <-> float, and a smooth activation's f(x) in the output dtype.
 */
#ifndef UNSWAG_CUDA_ELEMENT_MATH_CUH
#define UNSWAG_CUDA_ELEMENT_MATH_CUH

#include <stdint.h>

#include "../core/act_math.h"
#include "../core/act_math_f32.h"
#include "../core/internal.h"

namespace unswag_cuda {

// ---- element values: bits in a uint32_t (16-bit dtypes zero-extended) ----------

template <int DT>
__device__ __forceinline__ float to_float(uint32_t bits) {
  if constexpr (DT == UNSWAG_F32) return us_bits_to_f32(bits);
  else if constexpr (DT == UNSWAG_BF16) return us_bf16_to_f32((uint16_t)bits);
  else return us_f16_to_f32((uint16_t)bits);
}

// A computed value in the output dtype; a computed NaN is the canonical one
// (us_canon_nan for fp32, the conversions for 16-bit), as on the CPU.
template <int DT>
__device__ __forceinline__ uint32_t from_float(float f) {
  if constexpr (DT == UNSWAG_F32) return us_f32_to_bits(us_canon_nan(f));
  else if constexpr (DT == UNSWAG_BF16) return us_f32_to_bf16(f);
  else return us_f32_to_f16(f);
}

// f(x) of a smooth activation, as the CPU computes it: float math for the
// 16-bit dtypes, float-float for fp32 (act_math_f32.h); the same bits.
template <int ACT, int DT>
__device__ __forceinline__ uint32_t smooth_value(float v) {
  if constexpr (DT == UNSWAG_F32) {
    float r;
    if constexpr (ACT == UNSWAG_SILU) r = us_silu_ff(v);
    else if constexpr (ACT == UNSWAG_GELU) r = us_gelu_ff(v);
    else r = us_gelu_tanh_ff(v);
    return from_float<DT>(r);
  } else {
    float r;
    if constexpr (ACT == UNSWAG_SILU) r = us_silu_f32(v);
    else if constexpr (ACT == UNSWAG_GELU) r = us_gelu_f32(v);
    else r = us_gelu_tanh_f32(v);
    return from_float<DT>(r);
  }
}

}  // namespace unswag_cuda

#endif /* UNSWAG_CUDA_ELEMENT_MATH_CUH */

/*
 * test_f32_math - the float-float fp32 activations (src/core/act_math_f32.h:
 * silu, gelu_tanh, gelu)
 * on a dense sweep: every 64th fp32 bit pattern (67 million inputs, every
 * binade, the subnormal outputs of the negative tails, both infinities and
 * NaNs) within 1 ulp of the double reference, and NaN only where the
 * reference has NaN.  tools/f32_exhaustive.c checks all 2^32 inputs once,
 * outside CI.  UNSWAG_TEST_QUICK=1: every 4096th.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "act_math_f32.h"
#include "check.h"
#include "reference.h"

static void sweep(unswag_activation act, float (*mine)(float), uint32_t step) {
  unswag_op op = unswag_op_make(act, 1);
  long bad = 0, checked = 0;
  for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += step) {
    uint32_t bits = (uint32_t)u;
    float x;
    memcpy(&x, &bits, 4);
    float y = mine(x);
    uint32_t got;
    memcpy(&got, &y, 4);
    uint32_t want = ref_round_bits(UNSWAG_F32, ref_activation(&op, x));
    ++checked;
    if (ref_ulp_diff(UNSWAG_F32, got, want) > 1) {
      if (!bad++)
        fprintf(stderr, "  %s: x = %a (0x%08X): %a, reference %a\n", unswag_activation_name(act), x,
                bits, y, ref_load(UNSWAG_F32, &want, 0));
    }
  }
  CHECK(bad == 0, "%s: %ld of %ld inputs beyond 1 ulp", unswag_activation_name(act), bad, checked);
}

int main(void) {
  const char *env = getenv("UNSWAG_TEST_QUICK");
  const uint32_t step = (env && strcmp(env, "1") == 0) ? 4096 : 64;
  sweep(UNSWAG_SILU, us_silu_ff, step);
  sweep(UNSWAG_GELU_TANH, us_gelu_tanh_ff, step);
  sweep(UNSWAG_GELU, us_gelu_ff, step);
  /* the ends, one by one */
  const float ends[] = {0.0f,        -0.0f,          INFINITY,        -INFINITY, 1e-45f,  -1e-45f,
                        64.0f,       64.00001f,      -64.0f,          -103.9f,   -104.0f, -110.0f,
                        -110.00001f, 1.4901161e-08f, -1.4901161e-08f, 16.0f,     -16.0f,  4.0f,
                        -4.0f,       15.999999f,     -15.999999f,     -14.5f};
  for (size_t i = 0; i < sizeof ends / sizeof *ends; ++i) {
    unswag_op s = unswag_op_make(UNSWAG_SILU, 1), g = unswag_op_make(UNSWAG_GELU_TANH, 1);
    unswag_op e = unswag_op_make(UNSWAG_GELU, 1);
    float x = ends[i], ys = us_silu_ff(x), yg = us_gelu_tanh_ff(x), ye = us_gelu_ff(x);
    uint32_t bs, bg, be;
    memcpy(&bs, &ys, 4);
    memcpy(&bg, &yg, 4);
    memcpy(&be, &ye, 4);
    CHECK(ref_ulp_diff(UNSWAG_F32, be, ref_round_bits(UNSWAG_F32, ref_activation(&e, x))) <= 1,
          "gelu(%a) = %a", x, ye);
    CHECK(ref_ulp_diff(UNSWAG_F32, bs, ref_round_bits(UNSWAG_F32, ref_activation(&s, x))) <= 1,
          "silu(%a) = %a", x, ys);
    CHECK(ref_ulp_diff(UNSWAG_F32, bg, ref_round_bits(UNSWAG_F32, ref_activation(&g, x))) <= 1,
          "gelu_tanh(%a) = %a", x, yg);
    /* the sign of a zero result is the sign of x, as in the reference */
    if (ys == 0.0f) CHECK(signbit(ys) == signbit(x), "silu(%a) = %a: sign", x, ys);
  }
  CHECK_SUMMARY("test_f32_math");
}

/*
 * gated_math.h - the per-element math of the gated MLP kernels (SwiGLU,
 * GeGLU): h = act(g) * u and its backward, shared verbatim by the CPU
 * kernels (src/cpu/gated.c) and the CUDA kernels (src/cuda/gated.cu, built
 * with --fmad=false), so 16-bit outputs are the same bits on every backend.
 *
 * The rules of act_math.h hold here too:
 *  - 16-bit dtypes: float math with only IEEE +,-,*,/, compares and integer
 *    ops (exp through us_exp_small); act(g) is exactly act_math.h's value;
 *  - fp32 dtype: double math through libm / CUDA double math, one rounding
 *    at the end (within 1 ulp of the correctly rounded value).
 *
 * Derivatives (exact, no approximation of f'):
 *   silu'(x)      = s (1 + x (1 - s)),              s = sigmoid(x)
 *   gelu'(x)      = Phi(x) + x phi(x),              Phi from erfc, phi = N(0,1) density
 *   gelu_tanh'(x) = s (1 + x (1 - s) v'(x)),        s = sigmoid(v),
 *                   v = 2 sqrt(2/pi) (x + 0.044715 x^3)   (0.5 x (1 + tanh(v/2)) = x s)
 * with 1 - s computed as its own quotient (never as 1 - s), so nothing
 * cancels except near the one zero of each derivative.
 *
 * Conventions: act'(+-Inf) is NaN (as in PyTorch's silu/gelu backward);
 * every NaN result is written as the positive quiet NaN (0x7FC00000, f16
 * 0x7E00, bf16 0x7FC0), so CPU and GPU agree byte for byte on NaN too.
 */
#ifndef UNSWAG_GATED_MATH_H
#define UNSWAG_GATED_MATH_H

#include "act_math.h"
#include "unswag.h"

/* ---- small helpers --------------------------------------------------------- */

UNSWAG_HD float us_qnan_f32(void) { return us_bits_to_f32(0x7FC00000u); }

/* NaN results -> the positive quiet NaN, on the output bits (integer selects
 * vectorise where a float compare before the conversion would not). */
UNSWAG_HD uint32_t us_canon_nan32(uint32_t b) {
  return (b & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : b;
}

UNSWAG_HD uint16_t us_canon_nan16(uint16_t b, int bf16) {
  uint32_t m = b & 0x7FFFu;
  if (bf16) return (uint16_t)(m > 0x7F80u ? 0x7FC0u : b);
  return (uint16_t)(m > 0x7C00u ? 0x7E00u : b);
}

/* 1 if x is +-Inf */
UNSWAG_HD int us_is_inf_f32(float x) { return (us_f32_to_bits(x) & 0x7FFFFFFFu) == 0x7F800000u; }

/* 16-bit element <-> float; bf16 is 1 for bfloat16, 0 for IEEE half. */
UNSWAG_HD float us_16_to_f32(uint16_t b, int bf16) {
  return bf16 ? us_bf16_to_f32(b) : us_f16_to_f32(b);
}

UNSWAG_HD uint16_t us_f32_to_16(float f, int bf16) {
  return bf16 ? us_f32_to_bf16(f) : us_f32_to_f16(f);
}

/* ---- what differs between float (16-bit dtypes) and double (fp32 dtype) ---- */

/* us_erfc_pos_f32 (act_math.h) is the erfc inside us_gelu_f32, so Phi below is
 * the Phi of the forward bit for bit. */

/* Phi(x), the standard normal CDF: no cancellation in the negative tail. */
UNSWAG_HD float us_norm_cdf_f32(float x) {
  float e = us_erfc_pos_f32(fabsf(x) * 0.707106781f);
  return x >= 0.0f ? 1.0f - 0.5f * e : 0.5f * e;
}

UNSWAG_HD double us_norm_cdf_f64(double x) { return 0.5 * erfc(-x * 0.70710678118654752440); }

/* The x that gelu_tanh' computes with.  Float: for |x| >= 16, |v| > 110, where
 * exp(-|v|) is 0 in float: clamping x there changes no result and keeps x^2 and
 * x (1 - s) v' finite.  Double: fp32 inputs (|x| <= 3.4e38) stay finite as they are. */
UNSWAG_HD float us_gelu_tanh_x_f32(float x) {
  return x > 16.0f ? 16.0f : (x < -16.0f ? -16.0f : x); /* NaN stays NaN */
}

UNSWAG_HD double us_gelu_tanh_x_f64(double x) { return x; }

/* ---- act(x) and act'(x): gated_act.inc, once per type -------------------------
 * us_silu_grad_f32, us_gelu_grad_f32, us_gelu_tanh_grad_f32, us_gated_act_f32,
 * us_gated_grad_f32 (float, us_exp_small) and the same _f64 (double, libm exp). */

#define US_REAL float
#define US_NAME(f) f##_f32
#define US_EXP us_exp_small
#define US_ABS fabsf
#include "gated_act.inc"

#define US_REAL double
#define US_NAME(f) f##_f64
#define US_EXP exp
#define US_ABS fabs
#include "gated_act.inc"

/* ---- the element operations, on bit patterns ---------------------------------- */

/* h = act(g) * u, 16-bit dtype: float math, one rounding. */
UNSWAG_HD uint16_t us_gated_fwd16(int act, int bf16, uint16_t g, uint16_t u) {
  float gv = us_16_to_f32(g, bf16), uv = us_16_to_f32(u, bf16);
  return us_canon_nan16(us_f32_to_16(us_gated_act_f32(act, gv) * uv, bf16), bf16);
}

/* h = act(g) * u, fp32: double math, one rounding. */
UNSWAG_HD uint32_t us_gated_fwd32(int act, uint32_t g, uint32_t u) {
  float gv = us_bits_to_f32(g), uv = us_bits_to_f32(u);
  double h = us_gated_act_f64(act, gv) * (double)uv;
  return us_canon_nan32(us_f32_to_bits((float)h));
}

/* du = dh * act(g), dg = (dh * u) * act'(g), 16-bit dtype: float math. */
UNSWAG_HD void us_gated_bwd16(int act, int bf16, uint16_t dh, uint16_t g, uint16_t u, uint16_t *dg,
                              uint16_t *du) {
  float dhv = us_16_to_f32(dh, bf16), gv = us_16_to_f32(g, bf16), uv = us_16_to_f32(u, bf16);
  float a = us_gated_act_f32(act, gv);
  float d = us_gated_grad_f32(act, gv);
  *du = us_canon_nan16(us_f32_to_16(dhv * a, bf16), bf16);
  *dg = us_canon_nan16(us_f32_to_16((dhv * uv) * d, bf16), bf16);
}

/* The same for fp32 in double (dh * u is exact in double). */
UNSWAG_HD void us_gated_bwd32(int act, uint32_t dh, uint32_t g, uint32_t u, uint32_t *dg,
                              uint32_t *du) {
  float dhv = us_bits_to_f32(dh), gv = us_bits_to_f32(g), uv = us_bits_to_f32(u);
  double a = us_gated_act_f64(act, gv);
  double d = us_gated_grad_f64(act, gv);
  *du = us_canon_nan32(us_f32_to_bits((float)((double)dhv * a)));
  *dg = us_canon_nan32(us_f32_to_bits((float)(((double)dhv * (double)uv) * d)));
}

#endif /* UNSWAG_GATED_MATH_H */

/*
 * act_math.h - the per-element math of every kernel, shared verbatim by the
 * CPU kernels (C11) and the CUDA kernels (nvcc, built with --fmad=false), so
 * that codes and 16-bit outputs are the same bits on every backend.
 *
 * Rules that keep it bit-reproducible:
 *  - only IEEE +,-,*,/ and integer ops in float paths (no libm calls that
 *    may differ between libraries, no contraction into FMA);
 *  - the fp32 dtype computes in float-float arithmetic (act_math_f32.h:
 *    IEEE ops and fmaf only, the same bits everywhere), within 1 ulp of
 *    the correctly rounded value; the gated kernels' fp32 still computes in
 *    double through libm / CUDA double math, rounded once (within 1 ulp);
 *  - the 16-bit dtypes compute in float with the polynomial exp below
 *    (relative error ~1e-7, far under half an fp16/bf16 ulp).
 */
#ifndef UNSWAG_ACT_MATH_H
#define UNSWAG_ACT_MATH_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__CUDACC__)
#define UNSWAG_HD static __host__ __device__ __forceinline__
#else
#define UNSWAG_HD static inline
#endif

/* ---- bit casts ---------------------------------------------------------- */

/* The body of a bit cast of v to type TO: the CUDA intrinsic on the device,
 * memcpy (no aliasing trouble, compiled to a move) on the host. */
#if defined(__CUDA_ARCH__)
#define US_BIT_CAST(TO, v, cuda_intrinsic) return cuda_intrinsic(v)
#else
#define US_BIT_CAST(TO, v, cuda_intrinsic) \
  TO to_;                                  \
  memcpy(&to_, &(v), sizeof to_);          \
  return to_
#endif

UNSWAG_HD float us_bits_to_f32(uint32_t u) { US_BIT_CAST(float, u, __uint_as_float); }
UNSWAG_HD uint32_t us_f32_to_bits(float f) { US_BIT_CAST(uint32_t, f, __float_as_uint); }

/* ---- dtype conversions (branch-free so they vectorise) ------------------- */

UNSWAG_HD float us_bf16_to_f32(uint16_t b) { return us_bits_to_f32((uint32_t)b << 16); }

/* NaN payloads and signs depend on the order of operations (x86 and CUDA
 * differ, and so do scalar and vector code), so every NaN a kernel computes
 * is written as the one positive quiet NaN of its dtype. */
UNSWAG_HD float us_canon_nan(float f) { return f != f ? us_bits_to_f32(0x7FC00000u) : f; }

/* Round to nearest even; NaN -> 0x7FC0 (canonical quiet NaN). */
UNSWAG_HD uint16_t us_f32_to_bf16(float f) {
  uint32_t u = us_f32_to_bits(f);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  uint32_t is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return (uint16_t)(is_nan ? 0x7FC0u : rounded);
}

UNSWAG_HD float us_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t em = h & 0x7FFFu;
  /* normals and subnormals: shift into place, rescale by 2^112 (exact) */
  float mag = us_bits_to_f32(em << 13) * us_bits_to_f32(0x77800000u);
  uint32_t mag_bits = us_f32_to_bits(mag);
  uint32_t special = (em << 13) | 0x7F800000u; /* Inf / NaN */
  mag_bits = em >= 0x7C00u ? special : mag_bits;
  return us_bits_to_f32(sign | mag_bits);
}

/* Round to nearest even, overflow to Inf, NaN -> 0x7E00 (canonical). */
UNSWAG_HD uint16_t us_f32_to_f16(float f) {
  uint32_t u = us_f32_to_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7FFFFFFFu;
  /* normal half: rebias exponent, round mantissa to 10 bits (RNE) */
  uint32_t normal = (a + 0xC8000FFFu + ((a >> 13) & 1u)) >> 13;
  /* subnormal half: adding 0.5 makes the FPU round at 2^-24 */
  float sub = us_bits_to_f32(a) + 0.5f;
  uint32_t subnormal = us_f32_to_bits(sub) - 0x3F000000u;
  uint32_t r = a < 0x38800000u ? subnormal : normal;
  r = a >= 0x477FF000u ? 0x7C00u : r;       /* rounds to >= 65520: Inf */
  r = a > 0x7F800000u ? 0x7E00u : sign | r; /* NaN: canonical, no sign */
  return (uint16_t)r;
}

/* ---- float exp for the 16-bit paths --------------------------------------- */

/* 2^n (-252 <= n <= 254) as two normal floats s1 * s2: scaling by s1, then by
 * s2, rounds once even where the result is subnormal. */
UNSWAG_HD void us_pow2_halves(int32_t n, float *s1, float *s2) {
  const int32_t n1 = n / 2, n2 = n - n1;
  *s1 = us_bits_to_f32((uint32_t)(n1 + 127) << 23);
  *s2 = us_bits_to_f32((uint32_t)(n2 + 127) << 23);
}

/* exp(a) for a <= 1 (clamped below at -110, where float has underflowed).
 * Cody-Waite reduction by ln2, degree-7 Taylor polynomial on |r| <= ln2/2,
 * scaling by 2^n in two steps so subnormal results round once. */
UNSWAG_HD float us_exp_small(float a) {
  a = (a >= -110.0f) ? a : -110.0f;  /* also maps NaN to -110 */
  const float shifter = 12582912.0f; /* 1.5 * 2^23: adds then subtracts = rint */
  float t = a * 1.44269504f + shifter;
  float n = t - shifter;
  float r = a - n * 0.693145752f; /* ln2 high part: 16 bits, exact product */
  r = r - n * 1.42860677e-06f;    /* ln2 low part                          */
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  float s1, s2;
  us_pow2_halves((int32_t)n, &s1, &s2); /* n in [-159, 2] */
  return (p * s1) * s2;
}

/* ---- activations, float (16-bit dtypes) ------------------------------------ */

/* x * sigmoid(x), with exp of -|x| only so nothing overflows */
UNSWAG_HD float us_silu_f32(float x) {
  float e = us_exp_small(-fabsf(x));
  float s = (x >= 0.0f ? 1.0f : e) / (1.0f + e); /* one division, either branch */
  return x * s;
}

/* erfc(z) for z >= 0: a Chebyshev fit (relative error < 1.2e-7) of
 * t exp(-z^2 + P(t)), t = 1/(1 + z/2); no cancellation anywhere. */
UNSWAG_HD float us_erfc_pos_f32(float z) {
  float t = 1.0f / (1.0f + 0.5f * z);
  float q = 0.17087277f;
  q = q * t - 0.82215223f;
  q = q * t + 1.48851587f;
  q = q * t - 1.13520398f;
  q = q * t + 0.27886807f;
  q = q * t - 0.18628806f;
  q = q * t + 0.09678418f;
  q = q * t + 0.37409196f;
  q = q * t + 1.00002368f;
  q = q * t - 1.26551223f;
  return t * us_exp_small(q - z * z);
}

/* x * Phi(x), Phi from erfc so the negative tail has no cancellation. */
UNSWAG_HD float us_gelu_f32(float x) {
  float erfc_z = us_erfc_pos_f32(fabsf(x) * 0.707106781f);
  float phi = x >= 0.0f ? 1.0f - 0.5f * erfc_z : 0.5f * erfc_z;
  return x * phi;
}

/* 0.5 x (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) */
UNSWAG_HD float us_gelu_tanh_f32(float x) {
  float v = 1.59576912f * (x + 0.044715f * x * x * x);
  float e = us_exp_small(-fabsf(v));
  float s = (v >= 0.0f ? 1.0f : e) / (1.0f + e);
  return x * s;
}

/* ---- activations, double (the gated kernels' fp32 dtype, gated_act.inc) ---- */

UNSWAG_HD double us_silu_f64(double x) { return x / (1.0 + exp(-x)); }
UNSWAG_HD double us_gelu_f64(double x) { return 0.5 * x * erfc(-x * 0.70710678118654752440); }
UNSWAG_HD double us_gelu_tanh_f64(double x) {
  double v = 1.5957691216057307117 * (x + 0.044715 * x * x * x);
  return x / (1.0 + exp(-v));
}

/* ---- codes ------------------------------------------------------------------ */

/* Number of boundaries b[j] < x (sorted b, 2^bits - 1 of them); NaN -> 0.
 * Up to 15 boundaries a linear count (no gathers), else (8 bits, 255
 * boundaries) a binary search. */
UNSWAG_HD uint32_t us_smooth_code(float x, const float *b, int bits) {
  uint32_t c = 0;
  if (bits <= 4) {
    int m = (1 << bits) - 1;
    for (int j = 0; j < m; ++j) c += x > b[j] ? 1u : 0u;
  } else { /* bits == 8: eight steps, written out so compilers vectorise them */
    c += x > b[c + 127] ? 128u : 0u;
    c += x > b[c + 63] ? 64u : 0u;
    c += x > b[c + 31] ? 32u : 0u;
    c += x > b[c + 15] ? 16u : 0u;
    c += x > b[c + 7] ? 8u : 0u;
    c += x > b[c + 3] ? 4u : 0u;
    c += x > b[c + 1] ? 2u : 0u;
    c += x > b[c] ? 1u : 0u;
  }
  return c;
}

#endif /* UNSWAG_ACT_MATH_H */

/*
 * stochastic_math.h - the code of one element under UNSWAG_CODES_STOCHASTIC,
 * shared verbatim by the CPU (src/cpu/stochastic.c) and CUDA
 * (src/cuda/stochastic.cu, --fmad=false), so both write the same code bytes.
 *
 *   d  = act'(x) in float (gated_math.h's us_gated_grad_f32, for every dtype:
 *        float math only, so fp32 codes match across backends too); +Inf -> 1,
 *        -Inf -> 0 (the limits of f'); clamped into [levels[0], levels[K-1]]
 *   j  = the largest j <= K - 2 with levels[j] <= d  (K = 2^bits levels)
 *   p  = (d - levels[j]) / (levels[j+1] - levels[j])
 *   u  = us_stoch_uniform(seed, i) in [0, 1)
 *   code = j + (u < p)     so E[levels[code]] = d;  NaN x -> code 0
 *
 * u is counter based: splitmix64's output for state seed at step i + 1
 * (z = seed + (i + 1) * 0x9E3779B97F4A7C15, then its mixing function), top 24
 * bits over 2^24.  It depends only on (seed, global element index i).
 */
#ifndef UNSWAG_STOCHASTIC_MATH_H
#define UNSWAG_STOCHASTIC_MATH_H

#include "gated_math.h"

/* splitmix64's mixing of z = seed + (i + 1) * golden gamma */
UNSWAG_HD uint64_t us_stoch_hash(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1u) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* A uniform in [0, 1) with 24 random bits: exact in float. */
UNSWAG_HD float us_stoch_uniform(uint64_t seed, uint64_t i) {
  return (float)(uint32_t)(us_stoch_hash(seed, i) >> 40) * 5.9604644775390625e-8f; /* 2^-24 */
}

/* The code of element i with value x (see the top of the file). */
UNSWAG_HD uint32_t us_stoch_code(int act, float x, const float *levels, int bits, uint64_t seed,
                                 uint64_t i) {
  if (x != x) return 0u;
  const int k = 1 << bits;
  float d = us_is_inf_f32(x) ? (x > 0.0f ? 1.0f : 0.0f) : us_gated_grad_f32(act, x);
  d = d < levels[0] ? levels[0] : (d > levels[k - 1] ? levels[k - 1] : d);
  int j = 0; /* bit-descent search over levels[0 .. k-2] */
  for (int s = k >> 1; s > 0; s >>= 1)
    if (j + s <= k - 2 && levels[j + s] <= d) j += s;
  const float p = (d - levels[j]) / (levels[j + 1] - levels[j]);
  return (uint32_t)j + (us_stoch_uniform(seed, i) < p ? 1u : 0u);
}

#endif /* UNSWAG_STOCHASTIC_MATH_H */

/*
 * smooth16_avx2.h - hand-written AVX2 + F16C loops for the 16-bit smooth
 * activations at 1, 2 or 4 bits, used by the avx2 variant only
 * (kernels_avx2.c includes this before kernels.inc).  gcc does not vectorise
 * these from the plain loops: the forward gathers from the value table of
 * smooth_table.c, the backward looks levels up by code.  They perform the
 * scalar path's IEEE operations, so the bytes are the same (tests check it).
 */
#ifndef UNSWAG_SMOOTH16_AVX2_H
#define UNSWAG_SMOOTH16_AVX2_H

#if !defined(__AVX2__) || !defined(__F16C__)
#error "smooth16_avx2.h needs -mavx2 -mf16c"
#endif

#include <immintrin.h>
#include <string.h>
#include "cpu_kernels.h"

#define UNSWAG_SMOOTH16_LOOPS 1 /* kernels.inc calls the two entry points below */

/* the bit offset of each of 8 consecutive k-bit codes in their word: 0, k, ..., 7k */
ALWAYS_INLINE __m256i lane_shifts(const int bits) {
  return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(bits));
}

/* 8 16-bit values -> 8 floats, exactly (bf16: a shift; fp16: F16C) */
ALWAYS_INLINE __m256 cvt8_f32(const __m128i h, const int dt) {
  if (dt == UNSWAG_F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* bf16 and fp16 smooth forward at 1, 2 or 4 bits, 8 elements a step: values
 * gathered from the 16-bit table, codes counted with ordered compares against
 * the boundaries (NaN compares false: code 0, as us_smooth_code), the 8 codes
 * packed into one word.  Returns how many elements it did (a multiple of 8). */
ALWAYS_INLINE size_t forward8(const uint16_t *tab, const float *b, const int bits, const int dt,
                              const uint8_t *x, uint8_t *y, uint8_t *codes, size_t n) {
  const int nb = (1 << bits) - 1;
  __m256 bv[15];
  for (int j = 0; j < nb; ++j) bv[j] = _mm256_set1_ps(b[j]);
  const __m256i shifts = lane_shifts(bits);
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  const size_t n8 = n & ~(size_t)7;
  for (size_t i = 0; i < n8; i += 8) {
    /* x is read once, before y is written: x == y (in place) is allowed */
    const __m128i xh = _mm_loadu_si128((const __m128i *)(const void *)(x + 2 * i));
    const __m256i xi = _mm256_cvtepu16_epi32(xh);
    const __m256 xf = cvt8_f32(xh, dt);
    const __m256i v =
        _mm256_and_si256(_mm256_i32gather_epi32((const int *)(const void *)tab, xi, 2), low16);
    _mm_storeu_si128((__m128i *)(void *)(y + 2 * i),
                     _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
    __m256i c = _mm256_setzero_si256();
    for (int j = 0; j < nb; ++j) /* a true compare is -1: subtracting counts it */
      c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(xf, bv[j], _CMP_GT_OQ)));
    const __m256i f = _mm256_sllv_epi32(c, shifts); /* disjoint bit fields: OR them */
    __m128i t = _mm_or_si128(_mm256_castsi256_si128(f), _mm256_extracti128_si256(f, 1));
    t = _mm_or_si128(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_or_si128(t, _mm_shuffle_epi32(t, 0xB1));
    const uint32_t w = (uint32_t)_mm_cvtsi128_si32(t);
    memcpy(codes + i / 8 * (size_t)bits, &w, (size_t)bits); /* x86: the low bytes */
  }
  return n8;
}

/* bf16 and fp16 smooth backward at 1, 2 or 4 bits, 8 elements a step: the 8
 * codes come from one little-endian word and their levels from one or two
 * permutes, which gcc does not find for lv[c[i]].  The product and its rounding
 * are the scalar path's IEEE operations (us_f32_to_bf16 spelled in vector form;
 * for fp16 the F16C round-to-nearest-even conversion, NaN made canonical).
 * Returns how many elements it did (a multiple of 8). */
ALWAYS_INLINE size_t backward8(const float *lv, const int bits, const int dt, const uint8_t *dy,
                               const uint8_t *codes, uint8_t *dx, size_t n) {
  float pad[16] = {0};
  memcpy(pad, lv, sizeof(float) * (size_t)(1 << bits));
  const __m256 lv_lo = _mm256_loadu_ps(pad), lv_hi = _mm256_loadu_ps(pad + 8);
  const __m256i shifts = lane_shifts(bits);
  const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
  const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7FFF);
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
  const __m256i qnan = _mm256_set1_epi32(0x7FC0);
  const size_t n8 = n & ~(size_t)7;
  for (size_t i = 0; i < n8; i += 8) {
    uint32_t w = 0; /* bits is a constant here, so this is one load */
    memcpy(&w, codes + i / 8 * (size_t)bits, (size_t)bits);
    const __m256i idx =
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), shifts), mask);
    __m256 level = _mm256_permutevar8x32_ps(lv_lo, idx);
    if (bits == 4) /* bit 3 of the code picks the upper eight levels */
      level = _mm256_blendv_ps(level, _mm256_permutevar8x32_ps(lv_hi, idx),
                               _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
    const __m256 p = _mm256_mul_ps(
        cvt8_f32(_mm_loadu_si128((const __m128i *)(const void *)(dy + 2 * i)), dt), level);
    const __m256i u = _mm256_castps_si256(p);
    const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    __m128i out;
    if (dt == UNSWAG_F16) {
      const __m128i h = _mm256_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m128i nan16 =
          _mm_packs_epi32(_mm256_castsi256_si128(is_nan), _mm256_extracti128_si256(is_nan, 1));
      out = _mm_blendv_epi8(h, _mm_set1_epi16(0x7E00), nan16);
    } else {
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
      __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, half), lsb), 16);
      r = _mm256_blendv_epi8(r, qnan, is_nan);
      out = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    }
    _mm_storeu_si128((__m128i *)(void *)(dx + 2 * i), out);
  }
  return n8;
}

/* The entry points kernels.inc calls (with constant dt and bits): the count of
 * leading elements done, 0 where these loops do not apply. */
ALWAYS_INLINE size_t smooth16_forward(const uint16_t *tab, const float *b, const int bits,
                                      const int dt, const uint8_t *x, uint8_t *y, uint8_t *codes,
                                      size_t n) {
  if (dt == UNSWAG_F32 || bits > 4) return 0;
  return forward8(tab, b, bits, dt, x, y, codes, n);
}

ALWAYS_INLINE size_t smooth16_backward(const float *lv, const int bits, const int dt,
                                       const uint8_t *dy, const uint8_t *codes, uint8_t *dx,
                                       size_t n) {
  if (dt == UNSWAG_F32 || bits > 4) return 0;
  return backward8(lv, bits, dt, dy, codes, dx, n);
}

#endif

/*
 * rmsnorm_math.h - the RMSNorm element math and summation order, shared by
 * the CPU kernel (src/cpu/rmsnorm.c) and the CUDA kernel (src/cuda/rmsnorm.cu)
 * so both produce the same bytes.
 *
 * The row sum (sum of squares in the forward, sum of g * nf in the backward)
 * has one fixed order, whatever runs it:
 *  - group v holds elements 8v .. 8v+7 of the row (past the row's end: the
 *    term +0); its 8 terms are added pairwise: ((t0+t1)+(t2+t3))+((t4+t5)+(t6+t7));
 *  - group v goes to lane v % 256; each lane adds its groups in increasing v,
 *    starting from +0;
 *  - the 256 lanes are 8 sets of 32 (a CUDA warp each): each set is reduced
 *    by the tree a warp's shuffle-down gives (offsets 16, 8, 4, 2, 1:
 *    a[j] = a[j] + a[j + off]), then the 8 set sums by the same tree
 *    (offsets 4, 2, 1).
 * Sums are float for fp16/bf16 and double for fp32 (the accumulator type Acc).
 *
 * dw has a fixed order too: rows in chunks of us_rms_chunk_rows(rows); within
 * a chunk each column adds its rows' terms in row order from +0 (float); the
 * chunk sums are added in chunk order from +0; that total is added to dw.
 */
#ifndef UNSWAG_RMSNORM_MATH_H
#define UNSWAG_RMSNORM_MATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "act_math.h"

#define US_RMS_GROUP 8           /* elements a group (16 bytes of fp16/bf16)    */
#define US_RMS_LANES 256         /* partial sums a row                          */
#define US_RMS_SET 32            /* lanes a set (one warp)                      */
#define US_RMS_SETS 8            /* sets                                        */
#define US_RMS_DW_MAX_CHUNKS 512 /* most row chunks of the dw sums               */
#define US_RMS_DW_MIN_ROWS 8     /* fewest rows a chunk (unless rows is smaller) */

/* dtype codes as in unswag.h: 0 fp32, 1 fp16, 2 bf16 */
UNSWAG_HD float us_rms_to_f32(int dt, uint32_t b) {
  return dt == 0 ? us_bits_to_f32(b)
                 : (dt == 2 ? us_bf16_to_f32((uint16_t)b) : us_f16_to_f32((uint16_t)b));
}

/* float -> dtype bits, round to nearest even, NaN canonical */
UNSWAG_HD uint32_t us_rms_round(int dt, float f) {
  return dt == 0 ? us_f32_to_bits(us_canon_nan(f))
                 : (dt == 2 ? (uint32_t)us_f32_to_bf16(f) : (uint32_t)us_f32_to_f16(f));
}

UNSWAG_HD float us_rms_pair8_f(const float t[8]) {
  return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}
UNSWAG_HD double us_rms_pair8_d(const double t[8]) {
  return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* rstd from the row sum: 16-bit dtypes in float, fp32 in double (rounded
 * once to float).  sqrt and / are IEEE (correctly rounded) on both sides. */
UNSWAG_HD float us_rms_rstd_f(float sum, size_t cols, float eps) {
  return us_canon_nan(1.0f / sqrtf(sum / (float)cols + eps));
}
UNSWAG_HD float us_rms_rstd_d(double sum, size_t cols, float eps) {
  return us_canon_nan((float)(1.0 / sqrt(sum / (double)cols + (double)eps)));
}

/* mean(g * nf) of the backward, as a float */
UNSWAG_HD float us_rms_mean_f(float sum, size_t cols) { return sum / (float)cols; }
UNSWAG_HD float us_rms_mean_d(double sum, size_t cols) { return (float)(sum / (double)cols); }

/* forward element: y's bits from x's and w's bits */
UNSWAG_HD uint32_t us_rms_fwd_elem(int dt, uint32_t x, uint32_t w, float rstd) {
  const uint32_t n = us_rms_round(dt, us_rms_to_f32(dt, x) * rstd);
  return us_rms_round(dt, us_rms_to_f32(dt, w) * us_rms_to_f32(dt, n));
}

/* backward element: dx's bits */
UNSWAG_HD uint32_t us_rms_dx_elem(int dt, uint32_t dy, uint32_t x, uint32_t w, float rstd,
                                  float mean) {
  const float g = us_rms_to_f32(dt, dy) * us_rms_to_f32(dt, w);
  const float nf = us_rms_to_f32(dt, x) * rstd;
  return us_rms_round(dt, rstd * (g - nf * mean));
}

/* backward element: the dw term dy * n */
UNSWAG_HD float us_rms_dw_term(int dt, uint32_t dy, uint32_t x, float rstd) {
  const uint32_t n = us_rms_round(dt, us_rms_to_f32(dt, x) * rstd);
  return us_rms_to_f32(dt, dy) * us_rms_to_f32(dt, n);
}

/* Rows a dw chunk: at least US_RMS_DW_MIN_ROWS, and few enough chunks
 * (<= US_RMS_DW_MAX_CHUNKS).  rows >= 1. */
UNSWAG_HD size_t us_rms_chunk_rows(size_t rows) {
  size_t r = (rows + US_RMS_DW_MAX_CHUNKS - 1) / US_RMS_DW_MAX_CHUNKS;
  return r < US_RMS_DW_MIN_ROWS ? US_RMS_DW_MIN_ROWS : r;
}

UNSWAG_HD size_t us_rms_chunks(size_t rows) {
  const size_t r = us_rms_chunk_rows(rows);
  return (rows + r - 1) / r;
}

#endif

/*
 * rmsnorm.c - the CPU RMSNorm forward and backward (HF LlamaRMSNorm).
 *
 * The math and the summation order are core/rmsnorm_math.h's, shared with
 * the CUDA kernel, so both give the same bytes.  Validate everything first,
 * then run; nothing is written on error.  Rows are independent and split
 * over OpenMP threads for large calls; the dw column sums are split by
 * column blocks, each summed in the fixed chunk order, so the result does
 * not depend on the thread count.
 */
#include <stdint.h>
#include <string.h>
#include "../core/internal.h"
#include "../core/rmsnorm_math.h"
#include "parallel.h"

#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif

#define DW_COLS 256 /* columns a dw block (two stack arrays of this many floats) */

ALWAYS_INLINE uint32_t ld(int dt, const uint8_t *p, size_t i) {
  if (dt == UNSWAG_F32) {
    uint32_t v;
    memcpy(&v, p + 4 * i, 4);
    return v;
  }
  uint16_t h;
  memcpy(&h, p + 2 * i, 2);
  return h;
}

ALWAYS_INLINE void st(int dt, uint8_t *p, size_t i, uint32_t v) {
  if (dt == UNSWAG_F32) {
    memcpy(p + 4 * i, &v, 4);
  } else {
    const uint16_t h = (uint16_t)v;
    memcpy(p + 2 * i, &h, 2);
  }
}

/* ---- the fixed-order row sum (rmsnorm_math.h) ------------------------------------- */

/* Term i of a row: x^2 (forward, dy == NULL) or g * nf (backward). */
ALWAYS_INLINE float term_f(int dt, const uint8_t *dy, const uint8_t *x, const uint8_t *w,
                           float rstd, size_t i) {
  const float xf = us_rms_to_f32(dt, ld(dt, x, i));
  if (!dy) return xf * xf;
  return (us_rms_to_f32(dt, ld(dt, dy, i)) * us_rms_to_f32(dt, ld(dt, w, i))) * (xf * rstd);
}

ALWAYS_INLINE double term_d(int dt, const uint8_t *dy, const uint8_t *x, const uint8_t *w,
                            float rstd, size_t i) {
  const float xf = us_rms_to_f32(dt, ld(dt, x, i));
  if (!dy) return (double)xf * (double)xf;
  const float g = us_rms_to_f32(dt, ld(dt, dy, i)) * us_rms_to_f32(dt, ld(dt, w, i));
  return (double)g * (double)(xf * rstd);
}

/* The row's sum in the fixed order, in lanes of type T (float for fp16 and bf16, double
 * for fp32; term_##S gives the terms): groups of US_RMS_GROUP terms summed pairwise, group
 * v added into lane v % US_RMS_LANES, then the set trees and the tree over the sets. */
#define ROW_SUM(T, S)                                                                        \
  ALWAYS_INLINE T row_sum_##S(int dt, const uint8_t *dy, const uint8_t *x, const uint8_t *w, \
                              float rstd, size_t cols) {                                     \
    T a[US_RMS_LANES];                                                                       \
    memset(a, 0, sizeof a); /* +0.0 */                                                       \
    const size_t groups = (cols + US_RMS_GROUP - 1) / US_RMS_GROUP;                          \
    for (size_t v = 0; v < groups; ++v) {                                                    \
      T t[US_RMS_GROUP];                                                                     \
      for (int k = 0; k < US_RMS_GROUP; ++k) {                                               \
        const size_t i = v * US_RMS_GROUP + (size_t)k;                                       \
        t[k] = i < cols ? term_##S(dt, dy, x, w, rstd, i) : (T)0;                            \
      }                                                                                      \
      a[v % US_RMS_LANES] = a[v % US_RMS_LANES] + us_rms_pair8_##S(t);                       \
    }                                                                                        \
    for (int s = 0; s < US_RMS_SETS; ++s) {                                                  \
      T *b = a + s * US_RMS_SET;                                                             \
      for (int off = US_RMS_SET / 2; off >= 1; off >>= 1)                                    \
        for (int j = 0; j < off; ++j) b[j] = b[j] + b[j + off];                              \
    }                                                                                        \
    for (int off = US_RMS_SETS / 2; off >= 1; off >>= 1)                                     \
      for (int s = 0; s < off; ++s)                                                          \
        a[s * US_RMS_SET] = a[s * US_RMS_SET] + a[(s + off) * US_RMS_SET];                   \
    return a[0];                                                                             \
  }
ROW_SUM(float, f)
ROW_SUM(double, d)
#undef ROW_SUM

/* ---- rows ------------------------------------------------------------------------------ */

/* One row: y may be x (each element is read before it is written). */
ALWAYS_INLINE void fwd_row(int dt, const uint8_t *x, const uint8_t *w, uint8_t *y, float *rstd,
                           size_t cols, float eps) {
  const float rs = dt == UNSWAG_F32
                       ? us_rms_rstd_d(row_sum_d(dt, NULL, x, NULL, 0.0f, cols), cols, eps)
                       : us_rms_rstd_f(row_sum_f(dt, NULL, x, NULL, 0.0f, cols), cols, eps);
  for (size_t i = 0; i < cols; ++i)
    st(dt, y, i, us_rms_fwd_elem(dt, ld(dt, x, i), ld(dt, w, i), rs));
  *rstd = rs;
}

/* One row of dx: dx may be dy. */
ALWAYS_INLINE void dx_row(int dt, const uint8_t *dy, const uint8_t *x, const uint8_t *w, float rs,
                          uint8_t *dx, size_t cols) {
  const float mean = dt == UNSWAG_F32 ? us_rms_mean_d(row_sum_d(dt, dy, x, w, rs, cols), cols)
                                      : us_rms_mean_f(row_sum_f(dt, dy, x, w, rs, cols), cols);
  for (size_t i = 0; i < cols; ++i)
    st(dt, dx, i, us_rms_dx_elem(dt, ld(dt, dy, i), ld(dt, x, i), ld(dt, w, i), rs, mean));
}

/* dw[j0, j1) += the column sums in the fixed chunk order (j1 - j0 <= DW_COLS). */
ALWAYS_INLINE void dw_block(int dt, const uint8_t *dy, const uint8_t *x, const float *rstd,
                            float *dw, size_t rows, size_t cols, size_t j0, size_t j1) {
  float part[DW_COLS], total[DW_COLS];
  const size_t m = j1 - j0, per = us_rms_chunk_rows(rows);
  memset(total, 0, sizeof total);
  for (size_t c0 = 0; c0 < rows; c0 += per) {
    const size_t c1 = rows - c0 < per ? rows : c0 + per;
    memset(part, 0, sizeof part);
    for (size_t r = c0; r < c1; ++r) {
      const size_t base = r * cols + j0;
      for (size_t j = 0; j < m; ++j)
        part[j] = part[j] + us_rms_dw_term(dt, ld(dt, dy, base + j), ld(dt, x, base + j), rstd[r]);
    }
    for (size_t j = 0; j < m; ++j) total[j] = total[j] + part[j];
  }
  for (size_t j = 0; j < m; ++j) dw[j0 + j] = us_canon_nan(dw[j0 + j] + total[j]);
}

/* ---- one specialised copy per dtype ----------------------------------------------------- */

#define BY_DTYPE(dt, CALL)           \
  do {                               \
    if ((dt) == UNSWAG_F32) {        \
      CALL(UNSWAG_F32);              \
    } else if ((dt) == UNSWAG_F16) { \
      CALL(UNSWAG_F16);              \
    } else {                         \
      CALL(UNSWAG_BF16);             \
    }                                \
  } while (0)

static void fwd_rows(int dt, const uint8_t *x, const uint8_t *w, uint8_t *y, float *rstd, size_t r0,
                     size_t r1, size_t cols, float eps) {
  const size_t rb = cols * unswag_dtype_size((unswag_dtype)dt);
#define FWD(DT) \
  for (size_t r = r0; r < r1; ++r) fwd_row(DT, x + r * rb, w, y + r * rb, rstd + r, cols, eps)
  BY_DTYPE(dt, FWD);
#undef FWD
}

static void dx_rows(int dt, const uint8_t *dy, const uint8_t *x, const uint8_t *w,
                    const float *rstd, uint8_t *dx, size_t r0, size_t r1, size_t cols) {
  const size_t rb = cols * unswag_dtype_size((unswag_dtype)dt);
#define DX(DT)                     \
  for (size_t r = r0; r < r1; ++r) \
  dx_row(DT, dy + r * rb, x + r * rb, w, rstd[r], dx + r * rb, cols)
  BY_DTYPE(dt, DX);
#undef DX
}

static void dw_blocks(int dt, const uint8_t *dy, const uint8_t *x, const float *rstd, float *dw,
                      size_t rows, size_t cols, size_t b0, size_t b1) {
#define DW(DT)                                                                     \
  for (size_t b = b0; b < b1; ++b) {                                               \
    const size_t j0 = b * DW_COLS, j1 = cols - j0 < DW_COLS ? cols : j0 + DW_COLS; \
    dw_block(DT, dy, x, rstd, dw, rows, cols, j0, j1);                             \
  }
  BY_DTYPE(dt, DW);
#undef DW
}

/* ---- threads ------------------------------------------------------------------------------ */

/* Threads for `items` independent items of a call of `elems` elements. */
static int threads_for(size_t items, size_t elems) {
  int t = unswag_cpu_thread_count(UNSWAG_PATH_AUTO, 0, elems);
  if ((size_t)t > items) t = (int)items;
  return t < 1 ? 1 : t;
}

/* One call's arguments, for the pieces the parallel-for hands out (rows, or dw's column
 * blocks: every result depends only on its own row / block, so any split gives the
 * same bytes). */
typedef struct {
  int dt;
  const uint8_t *x, *w, *dy;
  uint8_t *y, *dx;
  float *rstd_out, *dw;
  const float *rstd;
  size_t rows, cols;
  float eps;
} rms_call;

/* What both directions read; the rest is set by the entry point. */
static rms_call call_of(unswag_dtype dtype, const void *x, const void *w, size_t rows,
                        size_t cols) {
  rms_call c = {.dt = (int)dtype, .x = x, .w = w, .rows = rows, .cols = cols};
  return c;
}

static void fwd_piece(void *ctx, size_t b, size_t e) {
  const rms_call *c = (const rms_call *)ctx;
  fwd_rows(c->dt, c->x, c->w, c->y, c->rstd_out, b, e, c->cols, c->eps);
}

static void dx_piece(void *ctx, size_t b, size_t e) {
  const rms_call *c = (const rms_call *)ctx;
  dx_rows(c->dt, c->dy, c->x, c->w, c->rstd, c->dx, b, e, c->cols);
}

static void dw_piece(void *ctx, size_t b, size_t e) {
  const rms_call *c = (const rms_call *)ctx;
  dw_blocks(c->dt, c->dy, c->x, c->rstd, c->dw, c->rows, c->cols, b, e);
}

/* ---- entry points ------------------------------------------------------------------------- */

unswag_status unswag_rmsnorm_forward(unswag_dtype dtype, const void *x, const void *w, void *y,
                                     float *rstd, size_t rows, size_t cols, float eps,
                                     float weight_offset) {
  static const char fn[] = "unswag_rmsnorm_forward";
  const unswag_status s =
      unswag_rmsnorm_forward_check(fn, dtype, x, w, y, rstd, rows, cols, eps, weight_offset);
  if (s != UNSWAG_OK || rows == 0) return s;

  rms_call c = call_of(dtype, x, w, rows, cols);
  c.y = y;
  c.rstd_out = rstd;
  c.eps = eps;
  unswag_cpu_parallel_for(rows, threads_for(rows, rows * cols), fwd_piece, &c);
  return UNSWAG_OK;
}

unswag_status unswag_rmsnorm_backward(unswag_dtype dtype, const void *dy, const void *x,
                                      const void *w, const float *rstd, void *dx, float *dw_accum,
                                      size_t rows, size_t cols, float weight_offset) {
  static const char fn[] = "unswag_rmsnorm_backward";
  const unswag_status s = unswag_rmsnorm_backward_check(fn, dtype, dy, x, w, rstd, dx, dw_accum,
                                                        rows, cols, weight_offset, NULL);
  if (s != UNSWAG_OK || rows == 0) return s;

  rms_call c = call_of(dtype, x, w, rows, cols);
  c.dy = dy;
  c.dx = dx;
  c.dw = dw_accum;
  c.rstd = rstd;
  /* dw first: it reads dy, which dx may overwrite */
  const size_t blocks = (cols + DW_COLS - 1) / DW_COLS;
  unswag_cpu_parallel_for(blocks, threads_for(blocks, rows * cols), dw_piece, &c);
  unswag_cpu_parallel_for(rows, threads_for(rows, rows * cols), dx_piece, &c);
  return UNSWAG_OK;
}

/* Argument checks of the RMSNorm entry points (CPU and CUDA) and the size of
 * the CUDA backward's workspace. */
#include <math.h>
#include <stdint.h>
#include "internal.h"
#include "rmsnorm_math.h"

unswag_status unswag_rmsnorm_workspace_bytes(size_t rows, size_t cols, size_t *out_bytes) {
  if (!out_bytes)
    return unswag_fail(UNSWAG_ERR_NULL_POINTER,
                       "unswag_rmsnorm_workspace_bytes: out_bytes is NULL");
  const size_t chunks = rows == 0 ? 0 : us_rms_chunks(rows);
  if (chunks != 0 && cols > SIZE_MAX / 4 / chunks)
    return unswag_fail(UNSWAG_ERR_SIZE_OVERFLOW,
                       "unswag_rmsnorm_workspace_bytes: %zu chunks x %zu columns overflow size_t",
                       chunks, cols);
  *out_bytes = chunks * cols * 4;
  return UNSWAG_OK;
}

unswag_status unswag_rmsnorm_validate(const char *fn, unswag_dtype dtype, size_t rows, size_t cols,
                                      int has_eps, float eps, float weight_offset, int any_null) {
  const size_t es = unswag_dtype_size(dtype);
  if (es == 0) return unswag_fail(UNSWAG_ERR_BAD_DTYPE, "%s: unknown dtype %d", fn, (int)dtype);
  if (cols > SIZE_MAX / 4 || (rows != 0 && cols > SIZE_MAX / 4 / rows))
    return unswag_fail(UNSWAG_ERR_SIZE_OVERFLOW, "%s: %zu rows x %zu columns overflow size_t", fn,
                       rows, cols);
  if (rows > 0 && cols == 0)
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "%s: cols = 0 with rows = %zu (mean of no element)",
                       fn, rows);
  if (has_eps && !(isfinite(eps) && eps >= 0.0f))
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "%s: eps = %g must be finite and >= 0", fn,
                       (double)eps);
  if (weight_offset != 0.0f)
    return unswag_fail(UNSWAG_ERR_BAD_PARAM,
                       "%s: weight_offset = %g; only 0 (y = w * n, Llama) is supported", fn,
                       (double)weight_offset);
  if (rows > 0 && any_null)
    return unswag_fail(UNSWAG_ERR_NULL_POINTER, "%s: NULL pointer with rows = %zu", fn, rows);
  return UNSWAG_OK;
}

unswag_status unswag_rmsnorm_check_overlap(const char *fn, const unswag_span *s, int count) {
  for (int a = 0; a < count; ++a) {
    for (int b = a + 1; b < count; ++b) {
      if (!s[a].output && !s[b].output) continue;
      if (s[a].bytes == 0 || s[b].bytes == 0) continue;
      const uintptr_t pa = (uintptr_t)s[a].p, pb = (uintptr_t)s[b].p;
      if (pa + s[a].bytes <= pb || pb + s[b].bytes <= pa) continue;
      const int allowed =
          (s[a].may_equal == b || s[b].may_equal == a) && pa == pb && s[a].bytes == s[b].bytes;
      if (!allowed)
        return unswag_fail(UNSWAG_ERR_BAD_PARAM, "%s: %s and %s overlap%s", fn, s[a].name,
                           s[b].name,
                           (s[a].may_equal == b || s[b].may_equal == a)
                               ? " (they may be the same buffer, not a shifted one)"
                               : "");
    }
  }
  return UNSWAG_OK;
}

unswag_status unswag_check_f32_aligned(const char *fn, const char *what, const void *p) {
  if ((uintptr_t)p % 4 != 0)
    return unswag_fail(UNSWAG_ERR_BAD_POINTER, "%s: %s = %p is not 4-byte aligned (fp32 array)", fn,
                       what, p);
  return UNSWAG_OK;
}

unswag_status unswag_rmsnorm_forward_check(const char *fn, unswag_dtype dtype, const void *x,
                                           const void *w, const void *y, const float *rstd,
                                           size_t rows, size_t cols, float eps,
                                           float weight_offset) {
  unswag_status s = unswag_rmsnorm_validate(fn, dtype, rows, cols, 1, eps, weight_offset,
                                            !x || !w || !y || !rstd);
  if (s != UNSWAG_OK || rows == 0) return s;
  const size_t es = unswag_dtype_size(dtype), bytes = rows * cols * es;
  const unswag_span spans[] = {{"x", x, bytes, 0, 2},
                               {"w", w, cols * es, 0, -1},
                               {"y", y, bytes, 1, 0},
                               {"rstd", rstd, rows * 4, 1, -1}};
  if ((s = unswag_rmsnorm_check_overlap(fn, spans, 4)) != UNSWAG_OK) return s;
  return unswag_check_f32_aligned(fn, "rstd", rstd);
}

unswag_status unswag_rmsnorm_backward_check(const char *fn, unswag_dtype dtype, const void *dy,
                                            const void *x, const void *w, const float *rstd,
                                            const void *dx, const float *dw_accum, size_t rows,
                                            size_t cols, float weight_offset,
                                            const unswag_workspace *ws) {
  unswag_status s = unswag_rmsnorm_validate(fn, dtype, rows, cols, 0, 0.0f, weight_offset,
                                            !dy || !x || !w || !rstd || !dx || !dw_accum);
  if (s != UNSWAG_OK || rows == 0) return s;
  size_t need = 0;
  if (ws) {
    if ((s = unswag_rmsnorm_workspace_bytes(rows, cols, &need)) != UNSWAG_OK) return s;
    if (!ws->p)
      return unswag_fail(UNSWAG_ERR_NULL_POINTER, "%s: workspace is NULL (%zu bytes needed)", fn,
                         need);
    if (ws->bytes < need)
      return unswag_fail(UNSWAG_ERR_BAD_PARAM,
                         "%s: workspace of %zu bytes, %zu needed (unswag_rmsnorm_workspace_bytes)",
                         fn, ws->bytes, need);
  }
  const size_t es = unswag_dtype_size(dtype), bytes = rows * cols * es;
  const unswag_span spans[] = {{"dy", dy, bytes, 0, 4},
                               {"x", x, bytes, 0, -1},
                               {"w", w, cols * es, 0, -1},
                               {"rstd", rstd, rows * 4, 0, -1},
                               {"dx", dx, bytes, 1, 0},
                               {"dw_accum", dw_accum, cols * 4, 1, -1},
                               {"workspace", ws ? ws->p : NULL, need, 1, -1}};
  if ((s = unswag_rmsnorm_check_overlap(fn, spans, ws ? 7 : 6)) != UNSWAG_OK) return s;
  if ((s = unswag_check_f32_aligned(fn, "rstd", rstd)) != UNSWAG_OK) return s;
  if ((s = unswag_check_f32_aligned(fn, "dw_accum", dw_accum)) != UNSWAG_OK) return s;
  return ws ? unswag_check_f32_aligned(fn, "workspace", ws->p) : UNSWAG_OK;
}

/* CPU entry points: validate everything, then pick scalar / vector /
 * threaded and run.  Nothing is written before validation has passed. */
#include <stdint.h>
#include "../core/internal.h"
#include "cpu_kernels.h"
#include "threads.h"

#ifdef UNSWAG_HAVE_AVX2_KERNELS
#include <cpuid.h>
/* F16C by cpuid: some clang versions do not know "f16c" in __builtin_cpu_supports */
static int have_f16c(void) {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

static void pick_vector(unswag_fwd_fn *f, unswag_bwd_fn *b) {
#ifdef UNSWAG_HAVE_AVX2_KERNELS
  if (__builtin_cpu_supports("avx2") && have_f16c()) {
    *f = unswag_cpu_forward_avx2;
    *b = unswag_cpu_backward_avx2;
    return;
  }
#endif
  *f = unswag_cpu_forward_sse2;
  *b = unswag_cpu_backward_sse2;
}

/* Shared validation of the call; fills the kernel arguments. */
static unswag_status prepare(const unswag_op *op, unswag_dtype dtype, const void *in,
                             const void *out, const void *codes, size_t n,
                             const unswag_cpu_options *opts, unswag_codebook *cb,
                             unswag_kargs *ka) {
  unswag_status s = unswag_resolve_op(op, cb);
  if (s != UNSWAG_OK) return s;
  if (unswag_dtype_size(dtype) == 0)
    return unswag_fail(UNSWAG_ERR_BAD_DTYPE, "unknown dtype %d", (int)dtype);
  size_t nbytes;
  s = unswag_code_bytes(n, op->bits, &nbytes);
  if (s != UNSWAG_OK) return s;
  if (n > 0 && (!in || !out || !codes))
    return unswag_fail(UNSWAG_ERR_NULL_POINTER, "NULL data or code pointer with n = %zu", n);
  if (opts) {
    if ((unsigned)opts->path >= UNSWAG_PATH_COUNT_)
      return unswag_fail(UNSWAG_ERR_BAD_PARAM, "unknown cpu path %d", (int)opts->path);
    if (opts->num_threads < 0)
      return unswag_fail(UNSWAG_ERR_BAD_PARAM, "num_threads must be >= 0; got %d",
                         opts->num_threads);
  }
  ka->act = op->act;
  ka->dtype = dtype;
  ka->bits = op->bits;
  ka->slope = op->slope;
  ka->lo = op->lo;
  ka->hi = op->hi;
  ka->boundaries = cb->boundaries;
  ka->levels = cb->levels;
  return UNSWAG_OK;
}

unswag_status unswag_forward_advanced(const unswag_op *op, unswag_dtype dtype,
                                      const void *x, void *y, uint8_t *codes, size_t n,
                                      const unswag_cpu_options *opts) {
  unswag_codebook cb;
  unswag_kargs ka;
  unswag_status s = prepare(op, dtype, x, y, codes, n, opts, &cb, &ka);
  if (s != UNSWAG_OK || n == 0) return s;
  unswag_fwd_fn fwd;
  unswag_bwd_fn bwd;
  pick_vector(&fwd, &bwd);
  if (opts && opts->path == UNSWAG_PATH_SCALAR) fwd = unswag_cpu_forward_scalar;
  int t = unswag_cpu_thread_count(opts ? opts->path : UNSWAG_PATH_AUTO,
                                  opts ? opts->num_threads : 0, n);
  if (t == 1) {
    fwd(&ka, x, y, codes, n);
    return UNSWAG_OK;
  }
  const size_t es = unswag_dtype_size(dtype);
#ifdef _OPENMP
#pragma omp parallel for num_threads(t) schedule(static, 1)
#endif
  for (int i = 0; i < t; ++i) {
    size_t b, e;
    unswag_cpu_piece(n, t, i, &b, &e);
    if (e > b)
      fwd(&ka, (const uint8_t *)x + b * es, (uint8_t *)y + b * es, codes + b / 8 * (size_t)ka.bits,
          e - b);
  }
  return UNSWAG_OK;
}

unswag_status unswag_backward_advanced(const unswag_op *op, unswag_dtype dtype,
                                       const void *dy, const uint8_t *codes, void *dx,
                                       size_t n, const unswag_cpu_options *opts) {
  unswag_codebook cb;
  unswag_kargs ka;
  unswag_status s = prepare(op, dtype, dy, dx, codes, n, opts, &cb, &ka);
  if (s != UNSWAG_OK || n == 0) return s;
  unswag_fwd_fn fwd;
  unswag_bwd_fn bwd;
  pick_vector(&fwd, &bwd);
  if (opts && opts->path == UNSWAG_PATH_SCALAR) bwd = unswag_cpu_backward_scalar;
  int t = unswag_cpu_thread_count(opts ? opts->path : UNSWAG_PATH_AUTO,
                                  opts ? opts->num_threads : 0, n);
  if (t == 1) {
    bwd(&ka, dy, codes, dx, n);
    return UNSWAG_OK;
  }
  const size_t es = unswag_dtype_size(dtype);
#ifdef _OPENMP
#pragma omp parallel for num_threads(t) schedule(static, 1)
#endif
  for (int i = 0; i < t; ++i) {
    size_t b, e;
    unswag_cpu_piece(n, t, i, &b, &e);
    if (e > b)
      bwd(&ka, (const uint8_t *)dy + b * es, codes + b / 8 * (size_t)ka.bits,
          (uint8_t *)dx + b * es, e - b);
  }
  return UNSWAG_OK;
}

unswag_status unswag_forward(const unswag_op *op, unswag_dtype dtype, const void *x, void *y,
                             uint8_t *codes, size_t n) {
  return unswag_forward_advanced(op, dtype, x, y, codes, n, NULL);
}

unswag_status unswag_backward(const unswag_op *op, unswag_dtype dtype, const void *dy,
                              const uint8_t *codes, void *dx, size_t n) {
  return unswag_backward_advanced(op, dtype, dy, codes, dx, n, NULL);
}

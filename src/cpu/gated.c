/*
 * gated.c - the CPU gated MLP kernels (SwiGLU / GeGLU elementwise part):
 *   forward   h = act(g) * u
 *   backward  du = dh * act(g),  dg = dh * u * act'(g)
 * with the per-element math of core/gated_math.h (shared with CUDA).
 *
 * Validate everything first, then run; nothing is written on error.  Work
 * goes in chunks of CHUNK elements: inputs are memcpy'd into local arrays
 * (any alignment; dg == g and du == u aliasing are fine, since a chunk is
 * read whole before any of it is written), the element loop runs over those
 * arrays (vectorised, one specialised loop per activation and dtype), and
 * results are memcpy'd out.  On x86-64 a second copy of the loops is built
 * for AVX2 (no FMA: the same IEEE operations, the same bytes) and picked at
 * run time.  Calls of 2^18 elements or more are split over OpenMP threads.
 */
/* The element loops select between values (x >= 0 ? a : b) whose arms
 * divide; GCC if-converts, and so vectorises, such loops only when FP
 * operations may be speculated.  That changes no value (IEEE results are
 * the same; only the exception flags are not modelled); clang does so by
 * default. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <stdint.h>
#include <string.h>
#include "../core/gated_math.h"
#include "../core/internal.h"
#include "threads.h"

#define CHUNK 512

#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define FLATTEN __attribute__((flatten)) /* inline the whole element math */
#else
#define ALWAYS_INLINE static inline
#define FLATTEN
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64))
#define GATED_HAVE_AVX2 1
#define TARGET_AVX2 __attribute__((target("avx2")))
#else
#define GATED_HAVE_AVX2 0
#endif

/* ---- element loops ----------------------------------------------------------- */

ALWAYS_INLINE void fwd_loop(const uint8_t *g, const uint8_t *u, uint8_t *h, size_t n,
                            const int act, const int dt) {
  if (dt == UNSWAG_F32) {
    uint32_t gi[CHUNK], ui[CHUNK], ho[CHUNK];
    for (size_t base = 0; base < n; base += CHUNK) {
      const size_t m = n - base < CHUNK ? n - base : CHUNK;
      memcpy(gi, g + base * 4, m * 4);
      memcpy(ui, u + base * 4, m * 4);
      for (size_t i = 0; i < m; ++i) ho[i] = us_gated_fwd32(act, gi[i], ui[i]);
      memcpy(h + base * 4, ho, m * 4);
    }
  } else {
    const int bf16 = dt == UNSWAG_BF16;
    uint16_t gi[CHUNK], ui[CHUNK], ho[CHUNK];
    for (size_t base = 0; base < n; base += CHUNK) {
      const size_t m = n - base < CHUNK ? n - base : CHUNK;
      memcpy(gi, g + base * 2, m * 2);
      memcpy(ui, u + base * 2, m * 2);
      for (size_t i = 0; i < m; ++i) ho[i] = us_gated_fwd16(act, bf16, gi[i], ui[i]);
      memcpy(h + base * 2, ho, m * 2);
    }
  }
}

ALWAYS_INLINE void bwd_loop(const uint8_t *dh, const uint8_t *g, const uint8_t *u, uint8_t *dg,
                            uint8_t *du, size_t n, const int act, const int dt) {
  if (dt == UNSWAG_F32) {
    uint32_t dhi[CHUNK], gi[CHUNK], ui[CHUNK], dgo[CHUNK], duo[CHUNK];
    for (size_t base = 0; base < n; base += CHUNK) {
      const size_t m = n - base < CHUNK ? n - base : CHUNK;
      memcpy(dhi, dh + base * 4, m * 4);
      memcpy(gi, g + base * 4, m * 4);
      memcpy(ui, u + base * 4, m * 4);
      for (size_t i = 0; i < m; ++i) us_gated_bwd32(act, dhi[i], gi[i], ui[i], &dgo[i], &duo[i]);
      memcpy(dg + base * 4, dgo, m * 4);
      memcpy(du + base * 4, duo, m * 4);
    }
  } else {
    const int bf16 = dt == UNSWAG_BF16;
    uint16_t dhi[CHUNK], gi[CHUNK], ui[CHUNK], dgo[CHUNK], duo[CHUNK];
    for (size_t base = 0; base < n; base += CHUNK) {
      const size_t m = n - base < CHUNK ? n - base : CHUNK;
      memcpy(dhi, dh + base * 2, m * 2);
      memcpy(gi, g + base * 2, m * 2);
      memcpy(ui, u + base * 2, m * 2);
      for (size_t i = 0; i < m; ++i)
        us_gated_bwd16(act, bf16, dhi[i], gi[i], ui[i], &dgo[i], &duo[i]);
      memcpy(dg + base * 2, dgo, m * 2);
      memcpy(du + base * 2, duo, m * 2);
    }
  }
}

/* ---- specialisation: one loop per (activation, dtype), per ISA ---------------- */

#define GATED_SWITCH(CALL)                                              \
  switch (act) {                                                        \
    case UNSWAG_SILU:                                                   \
      if (dt == UNSWAG_F32) CALL(UNSWAG_SILU, UNSWAG_F32);              \
      else if (dt == UNSWAG_F16) CALL(UNSWAG_SILU, UNSWAG_F16);         \
      else CALL(UNSWAG_SILU, UNSWAG_BF16);                              \
      break;                                                            \
    case UNSWAG_GELU:                                                   \
      if (dt == UNSWAG_F32) CALL(UNSWAG_GELU, UNSWAG_F32);              \
      else if (dt == UNSWAG_F16) CALL(UNSWAG_GELU, UNSWAG_F16);         \
      else CALL(UNSWAG_GELU, UNSWAG_BF16);                              \
      break;                                                            \
    default:                                                            \
      if (dt == UNSWAG_F32) CALL(UNSWAG_GELU_TANH, UNSWAG_F32);         \
      else if (dt == UNSWAG_F16) CALL(UNSWAG_GELU_TANH, UNSWAG_F16);    \
      else CALL(UNSWAG_GELU_TANH, UNSWAG_BF16);                         \
      break;                                                            \
  }

#define CALL_FWD(ACT, DT) fwd_loop(g, u, h, n, ACT, DT)
#define CALL_BWD(ACT, DT) bwd_loop(dh, g, u, dg, du, n, ACT, DT)

typedef void (*gated_fwd_fn)(int act, int dt, const uint8_t *g, const uint8_t *u, uint8_t *h,
                             size_t n);
typedef void (*gated_bwd_fn)(int act, int dt, const uint8_t *dh, const uint8_t *g,
                             const uint8_t *u, uint8_t *dg, uint8_t *du, size_t n);

FLATTEN
static void fwd_base(int act, int dt, const uint8_t *g, const uint8_t *u, uint8_t *h, size_t n) {
  GATED_SWITCH(CALL_FWD)
}

FLATTEN
static void bwd_base(int act, int dt, const uint8_t *dh, const uint8_t *g, const uint8_t *u,
                     uint8_t *dg, uint8_t *du, size_t n) {
  GATED_SWITCH(CALL_BWD)
}

#if GATED_HAVE_AVX2
TARGET_AVX2 FLATTEN
static void fwd_avx2(int act, int dt, const uint8_t *g, const uint8_t *u, uint8_t *h, size_t n) {
  GATED_SWITCH(CALL_FWD)
}

TARGET_AVX2 FLATTEN
static void bwd_avx2(int act, int dt, const uint8_t *dh, const uint8_t *g, const uint8_t *u,
                     uint8_t *dg, uint8_t *du, size_t n) {
  GATED_SWITCH(CALL_BWD)
}
#endif

static void pick(gated_fwd_fn *f, gated_bwd_fn *b) {
  *f = fwd_base;
  *b = bwd_base;
#if GATED_HAVE_AVX2
  if (__builtin_cpu_supports("avx2")) {
    *f = fwd_avx2;
    *b = bwd_avx2;
  }
#endif
}

/* ---- validation and threading ------------------------------------------------- */

/* ---- entry points ---------------------------------------------------------------- */

unswag_status unswag_gated_forward(unswag_activation act, unswag_dtype dtype, const void *g,
                                   const void *u, void *h, size_t n) {
  unswag_status s = unswag_gated_validate("unswag_gated_forward", act, dtype, n, !g || !u || !h);
  if (s != UNSWAG_OK || n == 0) return s;
  gated_fwd_fn fwd;
  gated_bwd_fn bwd;
  pick(&fwd, &bwd);
  const size_t es = unswag_dtype_size(dtype);
  const uint8_t *gp = (const uint8_t *)g, *up = (const uint8_t *)u;
  uint8_t *hp = (uint8_t *)h;
  const int t = unswag_cpu_thread_count(UNSWAG_PATH_AUTO, 0, n);
  if (t == 1) {
    fwd((int)act, (int)dtype, gp, up, hp, n);
    return UNSWAG_OK;
  }
#ifdef _OPENMP
#pragma omp parallel for num_threads(t) schedule(static, 1)
#endif
  for (int i = 0; i < t; ++i) {
    size_t b, e;
    unswag_cpu_piece(n, t, i, &b, &e);
    if (e > b) fwd((int)act, (int)dtype, gp + b * es, up + b * es, hp + b * es, e - b);
  }
  return UNSWAG_OK;
}

unswag_status unswag_gated_backward(unswag_activation act, unswag_dtype dtype, const void *dh,
                                    const void *g, const void *u, void *dg, void *du,
                                    size_t n) {
  unswag_status s =
      unswag_gated_validate("unswag_gated_backward", act, dtype, n, !dh || !g || !u || !dg || !du);
  if (s != UNSWAG_OK || n == 0) return s;
  gated_fwd_fn fwd;
  gated_bwd_fn bwd;
  pick(&fwd, &bwd);
  const size_t es = unswag_dtype_size(dtype);
  const uint8_t *dhp = (const uint8_t *)dh, *gp = (const uint8_t *)g, *up = (const uint8_t *)u;
  uint8_t *dgp = (uint8_t *)dg, *dup = (uint8_t *)du;
  const int t = unswag_cpu_thread_count(UNSWAG_PATH_AUTO, 0, n);
  if (t == 1) {
    bwd((int)act, (int)dtype, dhp, gp, up, dgp, dup, n);
    return UNSWAG_OK;
  }
#ifdef _OPENMP
#pragma omp parallel for num_threads(t) schedule(static, 1)
#endif
  for (int i = 0; i < t; ++i) {
    size_t b, e;
    unswag_cpu_piece(n, t, i, &b, &e);
    if (e > b)
      bwd((int)act, (int)dtype, dhp + b * es, gp + b * es, up + b * es, dgp + b * es,
          dup + b * es, e - b);
  }
  return UNSWAG_OK;
}

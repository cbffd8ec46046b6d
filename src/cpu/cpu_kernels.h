/* The CPU kernel variants.  Each variant is one translation unit that
 * includes the same loops (kernels.inc, gated_kernels.inc) and is compiled
 * with its own flags (CMakeLists.txt): scalar (vectorisation off: the
 * reference), baseline (-O3 for the compiler's default ISA) and, on x86-64,
 * avx2 (-O3 -mavx2 -mf16c, plus the intrinsics loops of smooth16_avx2.h).
 * The loops use no fast-math and no FMA contraction, so every variant
 * performs the same IEEE operations and writes the same bytes. */
#ifndef UNSWAG_CPU_KERNELS_H
#define UNSWAG_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "unswag.h"

/* Helpers of the loop files (kernels.inc, gated_kernels.inc, smooth16_avx2.h). */
#define CHUNK 512 /* elements per memcpy'd chunk; a multiple of 8: whole code bytes */
#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif

/* A validated op, flattened for the kernels. */
typedef struct unswag_kargs {
  unswag_activation act;
  unswag_dtype dtype;
  int bits;
  float slope, lo, hi;
  const float *boundaries; /* smooth: 2^bits - 1 */
  const float *levels;     /* smooth: 2^bits     */
} unswag_kargs;

/* Every kernel processes elements [0, n) of the given pointers.  Callers that
 * split work start every piece at a multiple of 8 elements (whole code bytes). */
typedef struct unswag_cpu_kernels {
  const char *name;
  void (*forward)(const unswag_kargs *a, const void *x, void *y, uint8_t *codes, size_t n);
  void (*backward)(const unswag_kargs *a, const void *dy, const uint8_t *codes, void *dx, size_t n);
  /* gated MLP (act = silu, gelu, gelu_tanh); NULL in the scalar variant */
  void (*gated_forward)(int act, int dtype, const uint8_t *g, const uint8_t *u, uint8_t *h,
                        size_t n);
  void (*gated_backward)(int act, int dtype, const uint8_t *dh, const uint8_t *g, const uint8_t *u,
                         uint8_t *dg, uint8_t *du, size_t n);
} unswag_cpu_kernels;

extern const unswag_cpu_kernels unswag_cpu_kernels_scalar;
extern const unswag_cpu_kernels unswag_cpu_kernels_baseline;
#ifdef UNSWAG_HAVE_AVX2_KERNELS
extern const unswag_cpu_kernels unswag_cpu_kernels_avx2;
#endif

/* The table of a variant translation unit that includes kernels.inc and gated_kernels.inc. */
#define UNSWAG_CPU_VARIANT(var, label)                                                   \
  const unswag_cpu_kernels var = {label, kernel_forward, kernel_backward, gated_forward, \
                                  gated_backward}

/* The fastest variant this CPU runs; its features are probed on the first call only. */
const unswag_cpu_kernels *unswag_cpu_kernels_best(void);

#endif

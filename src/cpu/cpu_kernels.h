/* The CPU kernel variants.  kernels.inc is compiled three times (scalar,
 * sse2 = baseline vectorised, avx2) from the same source, so every variant
 * performs the same IEEE operations and writes the same bytes. */
#ifndef UNSWAG_CPU_KERNELS_H
#define UNSWAG_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "unswag.h"

/* A validated op, flattened for the kernels. */
typedef struct unswag_kargs {
  unswag_activation act;
  unswag_dtype dtype;
  int bits;
  float slope, lo, hi;
  const float *boundaries; /* smooth: 2^bits - 1 */
  const float *levels;     /* smooth: 2^bits     */
} unswag_kargs;

/* Process elements [0, n) of the given pointers.  Callers that split work
 * must start every piece at a multiple of 8 elements (whole code bytes). */
typedef void (*unswag_fwd_fn)(const unswag_kargs *a, const void *x, void *y,
                              uint8_t *codes, size_t n);
typedef void (*unswag_bwd_fn)(const unswag_kargs *a, const void *dy,
                              const uint8_t *codes, void *dx, size_t n);

void unswag_cpu_forward_scalar(const unswag_kargs *a, const void *x, void *y,
                               uint8_t *codes, size_t n);
void unswag_cpu_backward_scalar(const unswag_kargs *a, const void *dy,
                                const uint8_t *codes, void *dx, size_t n);
void unswag_cpu_forward_sse2(const unswag_kargs *a, const void *x, void *y,
                             uint8_t *codes, size_t n);
void unswag_cpu_backward_sse2(const unswag_kargs *a, const void *dy,
                              const uint8_t *codes, void *dx, size_t n);
void unswag_cpu_forward_avx2(const unswag_kargs *a, const void *x, void *y,
                             uint8_t *codes, size_t n);
void unswag_cpu_backward_avx2(const unswag_kargs *a, const void *dy,
                              const uint8_t *codes, void *dx, size_t n);

#endif

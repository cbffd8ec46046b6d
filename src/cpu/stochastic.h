/* The CPU forward of stochastic codes (src/cpu/stochastic.c). */
#ifndef UNSWAG_CPU_STOCHASTIC_H
#define UNSWAG_CPU_STOCHASTIC_H

#include <stddef.h>
#include <stdint.h>
#include "cpu_kernels.h"

/* y and codes of elements [0, n) of a piece whose first element has global
 * index `first` (a multiple of 8): the random draw of an element depends only
 * on (seed, its global index), so any split writes the same bytes. */
void unswag_cpu_stochastic_forward(const unswag_kargs *a, uint64_t seed, uint64_t first,
                                   const uint8_t *x, uint8_t *y, uint8_t *codes, size_t n);

#endif

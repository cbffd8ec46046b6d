/* How the CPU entry points split a large call over OpenMP threads. */
#ifndef UNSWAG_CPU_THREADS_H
#define UNSWAG_CPU_THREADS_H

#include <stddef.h>
#include "unswag.h"

/* Threads for a call of n elements (1 = no parallel region): AUTO threads
 * only from 2^18 elements; never more than the cores or the 64-element
 * pieces, and 1 inside a caller's parallel region. requested 0 = cores. */
int unswag_cpu_thread_count(unswag_cpu_path path, int requested, size_t n);

/* Element range [begin, end) of piece i of t; starts are multiples of 64,
 * so every piece begins on a whole code byte. */
void unswag_cpu_piece(size_t n, int t, int i, size_t *begin, size_t *end);

#endif

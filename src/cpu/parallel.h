/* How the CPU entry points split a large call over threads: the library's
 * own small pool, whose idle workers sleep (no spinning after a call). */
#ifndef UNSWAG_CPU_PARALLEL_H
#define UNSWAG_CPU_PARALLEL_H

#include <stddef.h>
#include "unswag.h"

/* Cores this process may run on (its affinity mask), detected once. */
int unswag_cpu_cores(void);

/* Threads for a call of n elements (1 = run on the caller's thread): AUTO
 * threads only from 2^18 elements; never more than the cores or the
 * 64-element pieces.  requested 0 = all cores. */
int unswag_cpu_thread_count(unswag_cpu_path path, int requested, size_t n);

/* Work on elements [begin, end); begin is a multiple of 64 (a whole code byte). */
typedef void (*unswag_piece_fn)(void *ctx, size_t begin, size_t end);

/* Runs fn over [0, n), split into at least `threads` pieces that the caller's
 * thread and up to threads - 1 pool workers claim in turn; returns when every
 * piece is done.  One call uses the pool at a time: a concurrent caller runs
 * its whole range on its own thread. */
void unswag_cpu_parallel_for(size_t n, int threads, unswag_piece_fn fn, void *ctx);

#endif

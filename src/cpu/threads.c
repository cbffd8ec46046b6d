/* Thread count and work split shared by dispatch.c and gated.c. */
#ifdef _OPENMP
#include <omp.h>
#endif
#include "threads.h"

/* below this many elements a second thread costs more than it saves */
#define THREAD_MIN_ELEMS ((size_t)1 << 18)
#define PIECE_ALIGN ((size_t)64)

int unswag_cpu_thread_count(unswag_cpu_path path, int requested, size_t n) {
  if (path == UNSWAG_PATH_SCALAR || path == UNSWAG_PATH_VECTOR) return 1;
  if (path == UNSWAG_PATH_AUTO && n < THREAD_MIN_ELEMS) return 1;
#ifdef _OPENMP
  if (omp_in_parallel()) return 1; /* the caller already runs threads */
  int cores = omp_get_num_procs();
  int t = requested > 0 && requested < cores ? requested : cores; /* never oversubscribe */
  size_t pieces = (n + PIECE_ALIGN - 1) / PIECE_ALIGN;
  if ((size_t)t > pieces) t = (int)pieces;
  return t < 1 ? 1 : t;
#else
  (void)requested;
  return 1;
#endif
}

void unswag_cpu_piece(size_t n, int t, int i, size_t *begin, size_t *end) {
  size_t per = (n + (size_t)t - 1) / (size_t)t;
  per = (per + PIECE_ALIGN - 1) / PIECE_ALIGN * PIECE_ALIGN;
  *begin = per * (size_t)i < n ? per * (size_t)i : n;
  *end = *begin + per < n ? *begin + per : n;
}

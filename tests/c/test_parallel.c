/* The CPU parallel-for (src/cpu/parallel.c), on the library's own pool or,
 * built as test_parallel_omp (OpenMP linked, so a runtime is in the process),
 * on the process's OpenMP team:
 *  - unswag_cpu_parallel_for covers [0, n) exactly once, in pieces that start
 *    on multiples of 64, for every thread count (test_parallel_omp: every
 *    piece inside the OpenMP team when 2 or more threads are available);
 *  - several threads calling the library at once get the scalar path's bytes;
 *  - a child forked after the pool started runs threaded calls (no hang). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "check.h"
#include "parallel.h"
#include "unswag.h"

typedef struct {
  unsigned char *hits;
  int bad_start, outside_team;
} cover;

static void mark(void *ctx, size_t b, size_t e) {
  cover *c = (cover *)ctx;
  if (b % 64) c->bad_start = 1; /* distinct pieces never write the same flag */
#ifdef _OPENMP
  if (!omp_in_parallel()) c->outside_team = 1;
#endif
  for (size_t i = b; i < e; ++i) c->hits[i]++;
}

static void check_cover(void) {
  static const size_t sizes[] = {1, 63, 64, 65, 1000, 4096, 100003, (size_t)1 << 20};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; ++k) {
    for (int t = 1; t <= 9; ++t) {
      const size_t n = sizes[k];
      cover c = {calloc(n, 1), 0, 0};
      unswag_cpu_parallel_for(n, t, mark, &c);
      size_t wrong = 0;
      for (size_t i = 0; i < n; ++i) wrong += c.hits[i] != 1;
      CHECK(wrong == 0 && !c.bad_start, "parallel_for n=%zu threads=%d: %zu elements not done once",
            n, t, wrong);
#ifdef _OPENMP
      const int team = t > 1 && unswag_cpu_cores() > 1 && omp_get_max_threads() > 1;
      CHECK(!team || !c.outside_team, "n=%zu threads=%d: a piece ran outside the OpenMP team", n,
            t);
#endif
      free(c.hits);
    }
  }
}

/* One caller: bf16 silu k=2 forward, threaded, compared with the scalar path. */
#define N_ELEMS ((size_t)1 << 19)
typedef struct {
  const uint16_t *x;
  const uint16_t *y_ref;
  const uint8_t *c_ref;
  int failures;
} caller;

static void *call_repeatedly(void *arg) {
  caller *c = (caller *)arg;
  const unswag_op op = unswag_op_make(UNSWAG_SILU, 2);
  const unswag_cpu_options thr = {UNSWAG_PATH_THREADED, 0};
  uint16_t *y = malloc(N_ELEMS * 2);
  uint8_t *codes = malloc(N_ELEMS / 4);
  for (int r = 0; r < 20; ++r) {
    memset(y, 0, N_ELEMS * 2);
    if (unswag_forward_advanced(&op, UNSWAG_BF16, c->x, y, codes, N_ELEMS, &thr) != UNSWAG_OK ||
        memcmp(y, c->y_ref, N_ELEMS * 2) || memcmp(codes, c->c_ref, N_ELEMS / 4))
      c->failures++;
  }
  free(y);
  free(codes);
  return NULL;
}

int main(void) {
  check_cover();

  uint16_t *x = malloc(N_ELEMS * 2), *y_ref = malloc(N_ELEMS * 2);
  uint8_t *c_ref = malloc(N_ELEMS / 4);
  for (size_t i = 0; i < N_ELEMS; ++i) x[i] = (uint16_t)(i * 40503u);
  const unswag_op op = unswag_op_make(UNSWAG_SILU, 2);
  const unswag_cpu_options scalar = {UNSWAG_PATH_SCALAR, 0};
  CHECK(unswag_forward_advanced(&op, UNSWAG_BF16, x, y_ref, c_ref, N_ELEMS, &scalar) == UNSWAG_OK,
        "scalar reference");

  enum { CALLERS = 4 };
  pthread_t tid[CALLERS];
  caller c[CALLERS];
  for (int i = 0; i < CALLERS; ++i) {
    c[i] = (caller){x, y_ref, c_ref, 0};
    pthread_create(&tid[i], NULL, call_repeatedly, &c[i]);
  }
  for (int i = 0; i < CALLERS; ++i) {
    pthread_join(tid[i], NULL);
    CHECK(c[i].failures == 0, "concurrent caller %d: %d of 20 calls differ", i, c[i].failures);
  }

  /* the pool has started; a forked child must still run threaded calls */
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60); /* a hang fails the test instead of blocking it */
    caller child = {x, y_ref, c_ref, 0};
    call_repeatedly(&child);
    _exit(child.failures == 0 ? 0 : 1);
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "threaded calls in a forked child (status %d)", status);

  free(x);
  free(y_ref);
  free(c_ref);
  CHECK_SUMMARY("test_parallel");
}

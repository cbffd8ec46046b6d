/* The CPU parallel-for (src/cpu/parallel.c), on the library's own pool or,
 * built as test_parallel_omp (OpenMP linked, so a runtime is in the process),
 * on the process's OpenMP team:
 *  - unswag_cpu_parallel_for covers [0, n) exactly once, in pieces that start
 *    on multiples of 64, for every thread count (test_parallel_omp: every
 *    piece inside the OpenMP team when 2 or more threads are available);
 *  - several threads calling the library at once get the scalar path's bytes;
 *  - a child forked after the pool started runs threaded calls (no hang);
 *  - x86: every thread of a call works in the caller's floating-point
 *    environment (denormals-are-zero / flush-to-zero set by the caller: a
 *    threaded relu of subnormals gives the one-thread bytes). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
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

/* x86 only (MXCSR): the caller sets DAZ + FTZ; a threaded fp32 relu over
 * positive subnormals must give what one thread gives in that mode (zeros:
 * DAZ reads them as 0), not IEEE results from helper threads. */
static void check_caller_fp_env(void) {
#if defined(__x86_64__) || defined(__i386__)
  const size_t n = (size_t)1 << 20;
  float *x = malloc(n * 4), *y1 = malloc(n * 4), *yt = malloc(n * 4);
  uint8_t *c1 = malloc(n / 8), *ct = malloc(n / 8);
  for (size_t i = 0; i < n; ++i) x[i] = 1e-40f * (float)(1 + i % 7);
  const unswag_op op = unswag_op_make(UNSWAG_RELU, 1);
  const unswag_cpu_options one = {UNSWAG_PATH_VECTOR, 1}, all = {UNSWAG_PATH_THREADED, 0};
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040u); /* FTZ | DAZ */
  unswag_status s1 = unswag_forward_advanced(&op, UNSWAG_F32, x, y1, c1, n, &one);
  unswag_status st = unswag_forward_advanced(&op, UNSWAG_F32, x, yt, ct, n, &all);
  _mm_setcsr(saved);
  CHECK(s1 == UNSWAG_OK && st == UNSWAG_OK, "relu under DAZ: status %d %d", s1, st);
  CHECK(y1[0] == 0.0f && c1[0] == 0, "one thread under DAZ: subnormal inputs read as 0");
  CHECK(memcmp(y1, yt, n * 4) == 0 && memcmp(c1, ct, n / 8) == 0,
        "threaded relu under the caller's DAZ differs from one thread (helper threads in their "
        "own floating-point environment)");
  if (unswag_cpu_thread_count(UNSWAG_PATH_THREADED, 0, n) < 2)
    printf("test_parallel: one core, the floating-point environment check ran on one thread\n");
  free(x), free(y1), free(yt), free(c1), free(ct);
#endif
}

int main(void) {
  check_cover();
  check_caller_fp_env();

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

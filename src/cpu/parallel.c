/* The CPU parallel-for shared by every CPU kernel.
 *
 * The library starts no spinning threads.  libgomp's workers busy-wait after
 * each parallel region (OMP_WAIT_POLICY is read once, at its start, so a
 * library cannot change it), which slowed the C tests 30x on 2 cores and takes
 * cores from the process that calls us.  So a call runs on:
 *  - the process's OpenMP runtime when one is already loaded (PyTorch's: its
 *    team is awake after torch's own ops and shares the cores with them; a
 *    pool of ours would wait for cores those threads hold), with at most
 *    omp_get_max_threads() threads (torch.set_num_threads);
 *  - otherwise the library's own pool, whose idle workers sleep on a condition
 *    variable (plain C programs, JAX).
 * Either way the caller works on the call itself and pieces are claimed from
 * an atomic counter, so a thread that starts late delays nothing: the caller
 * takes its pieces.  Helper threads run their pieces in the caller's
 * floating-point environment (rounding, flush-to-zero / denormals-are-zero),
 * so a result never depends on which thread computed it. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "parallel.h"

#include <fenv.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sched.h>
#endif
#ifdef UNSWAG_HAVE_PTHREADS
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#endif

/* below this many elements a second thread costs more than it saves */
#define THREAD_MIN_ELEMS ((size_t)1 << 18)
#define PIECE_ALIGN ((size_t)64)
/* Large calls go in up to PIECES_PER_THREAD pieces a thread, none under
 * MIN_PIECE elements, so that a worker that wakes late still finds work. */
#define PIECES_PER_THREAD 4
#define MIN_PIECE ((size_t)1 << 15)
#define MAX_WORKERS 255

static int detect_cores(void) {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  return c > 0 ? (int)c : 1;
}

int unswag_cpu_cores(void) {
  static atomic_int cores; /* 0 until detected; a racing second detection is harmless */
  int c = atomic_load_explicit(&cores, memory_order_relaxed);
  if (c == 0) {
    c = detect_cores();
    atomic_store_explicit(&cores, c, memory_order_relaxed);
  }
  return c;
}

int unswag_cpu_thread_count(unswag_cpu_path path, int requested, size_t n) {
  if (path == UNSWAG_PATH_SCALAR || path == UNSWAG_PATH_VECTOR) return 1;
  if (path == UNSWAG_PATH_AUTO && n < THREAD_MIN_ELEMS) return 1;
#ifdef UNSWAG_HAVE_PTHREADS
  int cores = unswag_cpu_cores();
  int t = requested > 0 && requested < cores ? requested : cores; /* never oversubscribe */
  size_t pieces = (n + PIECE_ALIGN - 1) / PIECE_ALIGN;
  if ((size_t)t > pieces) t = (int)pieces;
  return t < 1 ? 1 : t;
#else
  (void)requested;
  return 1;
#endif
}

/* Element range [begin, end) of piece i of t; starts are multiples of 64. */
static void piece(size_t n, int t, int i, size_t *begin, size_t *end) {
  size_t per = (n + (size_t)t - 1) / (size_t)t;
  per = (per + PIECE_ALIGN - 1) / PIECE_ALIGN * PIECE_ALIGN;
  *begin = per * (size_t)i < n ? per * (size_t)i : n;
  *end = *begin + per < n ? *begin + per : n;
}

#ifndef UNSWAG_HAVE_PTHREADS

void unswag_cpu_parallel_for(size_t n, int threads, unswag_piece_fn fn, void *ctx) {
  (void)threads;
  if (n > 0) fn(ctx, 0, n);
}

#else

typedef struct job {
  unswag_piece_fn fn;
  void *ctx;
  size_t n;
  int pieces;
  atomic_int next; /* the next unclaimed piece */
  fenv_t env;      /* the caller's floating-point environment */
} job;

/* Run pieces of j until none is left unclaimed. */
static void run_pieces(job *j) {
  for (;;) {
    int i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (i >= j->pieces) return;
    size_t b, e;
    piece(j->n, j->pieces, i, &b, &e);
    if (e > b) j->fn(j->ctx, b, e);
  }
}

/* run_pieces on a helper thread, in the caller's floating-point environment
 * (XLA, for one, flushes subnormals on its threads; torch.set_flush_denormal
 * on the calling thread): the helper's own is restored after. */
static void run_pieces_as_caller(job *j) {
  fenv_t own;
  const int switched = fegetenv(&own) == 0 && fesetenv(&j->env) == 0;
  run_pieces(j);
  if (switched) fesetenv(&own);
}

/* Everything but `busy` is guarded by mu. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t wake; /* workers: a new job was posted (gen changed) or stop */
  pthread_cond_t idle; /* the caller: no worker is inside the job any more */
  unsigned long gen;   /* counts posted jobs */
  job *open;           /* the job workers may join; NULL once the caller closed it */
  int active;          /* workers inside the current job */
  int slots;           /* workers the open job may still take in (threads - 1 at first) */
  int workers, stop, tried;
  pthread_t tid[MAX_WORKERS];
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER,
          .idle = PTHREAD_COND_INITIALIZER};
static atomic_flag busy = ATOMIC_FLAG_INIT; /* held by the one caller using the pool */

static void *worker_main(void *arg) {
  unsigned long seen = (unsigned long)(uintptr_t)arg;
  pthread_mutex_lock(&pool.mu);
  for (;;) {
    while (!pool.stop && pool.gen == seen) pthread_cond_wait(&pool.wake, &pool.mu);
    if (pool.stop) break;
    seen = pool.gen;
    job *j = pool.open;
    if (!j || pool.slots == 0) continue; /* the job is done or has its threads */
    pool.slots--;
    pool.active++;
    pthread_mutex_unlock(&pool.mu);
    run_pieces_as_caller(j);
    pthread_mutex_lock(&pool.mu);
    if (--pool.active == 0) pthread_cond_signal(&pool.idle);
  }
  pthread_mutex_unlock(&pool.mu);
  return NULL;
}

/* 1 in a forked child: GNU OpenMP hangs in a child whose parent ran a team, so
 * the child uses the library's own pool (as PyTorch drops to one thread there). */
static int forked_child;

/* fork: the child has none of the workers; it starts a fresh pool on demand. */
static void before_fork(void) { pthread_mutex_lock(&pool.mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&pool.mu); }
static void after_fork_child(void) {
  pthread_mutex_init(&pool.mu, NULL);
  pthread_cond_init(&pool.wake, NULL);
  pthread_cond_init(&pool.idle, NULL);
  pool.open = NULL;
  pool.active = pool.slots = pool.workers = pool.stop = pool.tried = 0;
  forked_child = 1;
  atomic_flag_clear(&busy);
}

/* Unloading the library (dlclose) or exiting: let the sleeping workers leave
 * our code before it goes away. */
__attribute__((destructor)) static void stop_workers(void) {
  pthread_mutex_lock(&pool.mu);
  int n = pool.workers;
  pool.stop = 1;
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mu);
  for (int i = 0; i < n; ++i) pthread_join(pool.tid[i], NULL);
}

/* Starts cores - 1 workers the first time; called with `busy` held. */
static int start_workers(void) {
  if (pool.tried) return pool.workers;
  pool.tried = 1;
  int want = unswag_cpu_cores() - 1;
  if (want > MAX_WORKERS) want = MAX_WORKERS;
  /* workers take no signals: the caller's threads handle them */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_mutex_lock(&pool.mu);
  while (pool.workers < want && pthread_create(&pool.tid[pool.workers], NULL, worker_main,
                                               (void *)(uintptr_t)pool.gen) == 0)
    pool.workers++;
  pthread_mutex_unlock(&pool.mu);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return pool.workers;
}

/* The OpenMP runtime of the process, if one is loaded (looked up until found). */
typedef struct {
  void (*parallel)(void (*fn)(void *), void *data, unsigned threads, unsigned flags);
  int (*in_parallel)(void);
  int (*max_threads)(void);
} host_omp;

static const host_omp *find_host_omp(void) {
  static host_omp h;
  static atomic_int found; /* 1 once h is filled in */
  if (atomic_load_explicit(&found, memory_order_acquire)) return &h;
  /* GOMP_parallel: libgomp's entry, also provided by LLVM's and Intel's runtimes */
  void *p = dlsym(RTLD_DEFAULT, "GOMP_parallel");
  void *in = dlsym(RTLD_DEFAULT, "omp_in_parallel");
  void *mx = dlsym(RTLD_DEFAULT, "omp_get_max_threads");
  if (!p || !in || !mx) return NULL;
  /* function pointers from dlsym: converted through memcpy (ISO C has no cast) */
  memcpy(&h.parallel, &p, sizeof p);
  memcpy(&h.in_parallel, &in, sizeof in);
  memcpy(&h.max_threads, &mx, sizeof mx);
  atomic_store_explicit(&found, 1, memory_order_release);
  return &h;
}

static void host_member(void *j) { run_pieces_as_caller((job *)j); }

void unswag_cpu_parallel_for(size_t n, int threads, unswag_piece_fn fn, void *ctx) {
  if (n == 0) return;
  if (threads <= 1 || atomic_flag_test_and_set_explicit(&busy, memory_order_acquire)) {
    fn(ctx, 0, n); /* one thread asked for, or another call holds the pool */
    return;
  }
  size_t pieces = n / MIN_PIECE;
  if (pieces > (size_t)threads * PIECES_PER_THREAD) pieces = (size_t)threads * PIECES_PER_THREAD;
  if (pieces < (size_t)threads) pieces = (size_t)threads;
  job j = {.fn = fn, .ctx = ctx, .n = n, .pieces = (int)pieces};
  atomic_init(&j.next, 0);
  if (fegetenv(&j.env) != 0) {
    fn(ctx, 0, n); /* no environment to hand on: one thread */
    atomic_flag_clear_explicit(&busy, memory_order_release);
    return;
  }
  static int atfork_done; /* set with `busy` held */
  if (!atfork_done)
    atfork_done = pthread_atfork(before_fork, after_fork_parent, after_fork_child) == 0;
  const host_omp *omp = forked_child ? NULL : find_host_omp();
  if (omp || start_workers() == 0) {
    /* the host's team (never nested in one of its regions), or no pool at all */
    const int t = omp && !omp->in_parallel() ? omp->max_threads() : 1;
    if (t > 1) omp->parallel(host_member, &j, (unsigned)(t < threads ? t : threads), 0);
    else run_pieces(&j);
    atomic_flag_clear_explicit(&busy, memory_order_release);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  pool.open = &j;
  pool.slots = threads - 1;
  pool.gen++;
  /* wake one worker for each thread besides the caller */
  for (int i = 1; i < threads && i <= pool.workers; ++i) pthread_cond_signal(&pool.wake);
  pthread_mutex_unlock(&pool.mu);
  run_pieces(&j);
  /* every piece is claimed: close the job, wait for the workers still in it */
  pthread_mutex_lock(&pool.mu);
  pool.open = NULL;
  while (pool.active > 0) pthread_cond_wait(&pool.idle, &pool.mu);
  pthread_mutex_unlock(&pool.mu);
  atomic_flag_clear_explicit(&busy, memory_order_release);
}

#endif

/*
 * bench_cpu - forward / backward throughput of the CPU kernels against
 * memcpy bandwidth, measured in the same run.
 *
 *   bench_cpu [--n ELEMENTS] [--reps R] [--quick] [--dtype f32|f16|bf16] [--act NAME]
 *
 * Defaults: n = 64M elements (64 * 2^20), 5 timed repetitions after one
 * warm-up; --quick: n = 32M (still far larger than the caches), 5 repetitions.
 *
 * GB/s counts the bytes a call must move (1 GB = 1e9 bytes):
 *   forward:  read n*es (x),             write n*es (y) + code bytes
 *   backward: read n*es (dy) + code bytes, write n*es (dx)
 * memcpy of B bytes moves 2B (read + write).  The kernels run on the
 * default path (UNSWAG_PATH_AUTO: vectorised, threaded over all cores); the
 * memcpy baseline is split over the same number of threads (the library's
 * thread pool), on a buffer of n*es bytes, i.e. the size of the kernel's input.  Every buffer
 * is first touched by the threads that later use it.  memcpy and kernel
 * alternate, one repetition each, so both see the same state of a shared
 * machine.  GB/s figures are medians of the repetitions; ratio is the median
 * of the per-repetition ratios kernel GB/s / memcpy GB/s.
 *
 * One extra row: bf16 silu k=2 on the single-threaded vector path
 * (UNSWAG_PATH_VECTOR), beside a single-threaded memcpy.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "parallel.h" /* the library's thread pool (src/cpu, linked statically) */
#include "unswag.h"

/* ---- timing and helpers ---------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *alloc_or_die(size_t bytes) {
  void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) {
    fprintf(stderr, "bench_cpu: cannot allocate %zu bytes\n", bytes);
    exit(1);
  }
  return p;
}

static void check(unswag_status s, const char *what) {
  if (s != UNSWAG_OK) {
    fprintf(stderr, "bench_cpu: %s: %s\n  %s\n", what, unswag_status_string(s),
            unswag_last_error());
    exit(1);
  }
}

/* The buffers of a parallel memcpy / memset / fill, split by the library's
 * own parallel-for (the pool the kernels use). */
typedef struct {
  void *dst;
  const void *src;
  unswag_dtype dt;
} span;

static void copy_piece(void *ctx, size_t b, size_t e) {
  const span *s = (const span *)ctx;
  memcpy((char *)s->dst + b, (const char *)s->src + b, e - b);
}

static void zero_piece(void *ctx, size_t b, size_t e) {
  memset((char *)((const span *)ctx)->dst + b, 0, e - b);
}

/* memcpy of `bytes`, split over t threads */
static void par_memcpy(void *dst, const void *src, size_t bytes, int t) {
  span s = {dst, src, UNSWAG_F32};
  unswag_cpu_parallel_for(bytes, t, copy_piece, &s);
}

/* first touch: each thread writes the part it will later work on */
static void par_touch(void *p, size_t bytes, int t) {
  span s = {p, NULL, UNSWAG_F32};
  unswag_cpu_parallel_for(bytes, t, zero_piece, &s);
}

/* x[i]: roughly standard normal values (sum of 4 uniforms, scaled) in dtype */
static void normal_piece(void *ctx, size_t b, size_t e) {
  const span *s = (const span *)ctx;
  for (size_t i = b; i < e; ++i) {
    uint64_t z = (uint64_t)i * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    float v = 0.0f;
    for (int k = 0; k < 4; ++k) v += (float)((z >> (16 * k)) & 0xFFFF) * (1.0f / 65536.0f);
    v = (v - 2.0f) * 1.7320508f; /* variance 4/12 -> 1 */
    if (s->dt == UNSWAG_F32) ((float *)s->dst)[i] = v;
    else if (s->dt == UNSWAG_F16) ((uint16_t *)s->dst)[i] = unswag_f32_to_f16(v);
    else ((uint16_t *)s->dst)[i] = unswag_f32_to_bf16(v);
  }
}

static void fill_normal(void *x, unswag_dtype dt, size_t n, int t) {
  span s = {x, NULL, dt};
  unswag_cpu_parallel_for(n, t, normal_piece, &s);
}

/* ---- measurements ------------------------------------------------------------------- */

typedef struct {
  size_t n;
  int reps;
  int threads;
  void *x, *y, *dx;
  uint8_t *codes;
} bench_ctx;

typedef struct {
  double memcpy_gbs, kernel_gbs, ratio;
} result;

static void call_kernel(bench_ctx *c, const unswag_op *op, unswag_dtype dt, int dir,
                        const unswag_cpu_options *opts) {
  if (dir == 0) check(unswag_forward_advanced(op, dt, c->x, c->y, c->codes, c->n, opts), "forward");
  else /* reads the codes and dy = y that the forward left */
    check(unswag_backward_advanced(op, dt, c->y, c->codes, c->dx, c->n, opts), "backward");
}

/* Forward (dir 0) or backward (dir 1) beside memcpy of the input's bytes on
 * `threads` threads.  The two alternate, one repetition each, so both see
 * the same state of the machine; ratio = median of the per-pair ratios. */
static result measure(bench_ctx *c, const unswag_op *op, unswag_dtype dt, int dir,
                      const unswag_cpu_options *opts, int threads) {
  const size_t es = unswag_dtype_size(dt);
  const size_t in_bytes = c->n * es;
  size_t cb;
  check(unswag_code_bytes(c->n, op->bits, &cb), "unswag_code_bytes");
  const double kernel_bytes = 2.0 * (double)in_bytes + (double)cb;
  const double memcpy_bytes = 2.0 * (double)in_bytes;
  double tm[64], tk[64], ratio[64];
  for (int r = -1; r < c->reps; ++r) { /* r = -1: warm-up */
    double t0 = now_s();
    par_memcpy(c->dx, c->x, in_bytes, threads);
    double t1 = now_s();
    call_kernel(c, op, dt, dir, opts);
    double t2 = now_s();
    if (r < 0) continue;
    tm[r] = t1 - t0;
    tk[r] = t2 - t1;
    ratio[r] = (kernel_bytes / tk[r]) / (memcpy_bytes / tm[r]);
  }
  result res;
  res.memcpy_gbs = memcpy_bytes / median(tm, c->reps) / 1e9;
  res.kernel_gbs = kernel_bytes / median(tk, c->reps) / 1e9;
  res.ratio = median(ratio, c->reps);
  return res;
}

/* "model name" of /proc/cpuinfo, with family/model (VMs often hide the name) */
static void cpu_model(char *out, size_t cap) {
  char name[256] = "unknown", fam[32] = "?", mod[32] = "?";
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f) {
    char line[512];
    while (fgets(line, sizeof line, f)) {
      char *p = strchr(line, ':');
      if (!p) continue;
      char *v = p + 1 + strspn(p + 1, " \t");
      v[strcspn(v, "\n")] = 0;
      if (!strncmp(line, "model name", 10)) snprintf(name, sizeof name, "%s", v);
      else if (!strncmp(line, "cpu family", 10)) snprintf(fam, sizeof fam, "%s", v);
      else if (!strncmp(line, "model\t", 6)) snprintf(mod, sizeof mod, "%s", v);
      if (line[0] == '\n' || !strncmp(line, "power management", 16)) break; /* first CPU */
    }
    fclose(f);
  }
  snprintf(out, cap, "%s (family %s, model %s)", name, fam, mod);
}

/* the 1-minute load average: other processes on the machine skew results */
static void loadavg(char *out, size_t cap) {
  snprintf(out, cap, "unknown");
  FILE *f = fopen("/proc/loadavg", "r");
  if (!f) return;
  char line[128];
  if (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    snprintf(out, cap, "%s", line);
  }
  fclose(f);
}

static const char *dtype_name(unswag_dtype dt) {
  return dt == UNSWAG_F32 ? "f32" : dt == UNSWAG_F16 ? "f16" : "bf16";
}

int main(int argc, char **argv) {
  size_t n = (size_t)64 << 20;
  int reps = 5;
  const char *only_dtype = NULL, *only_act = NULL;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick")) {
      n = (size_t)32 << 20;
      reps = 5;
    } else if (!strcmp(argv[i], "--n") && i + 1 < argc) {
      n = (size_t)strtoull(argv[++i], NULL, 10);
    } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
      only_dtype = argv[++i];
    } else if (!strcmp(argv[i], "--act") && i + 1 < argc) {
      only_act = argv[++i];
    } else {
      fprintf(stderr,
              "usage: %s [--n ELEMENTS] [--reps R (5..64)] [--quick] [--dtype f32|f16|bf16]\n"
              "       [--act relu|silu|gelu|gelu_tanh]   (the last two: only those rows)\n",
              argv[0]);
      return 2;
    }
  }
  /* n >= 1M: large enough that the library's AUTO path runs threaded, like
   * the memcpy baseline (buffers that fit the caches measure the caches) */
  if (n < ((size_t)1 << 20) || reps < 5 || reps > 64) {
    fprintf(stderr, "bench_cpu: need n >= 1048576 and 5 <= reps <= 64\n");
    return 2;
  }

  bench_ctx c = {0};
  c.n = n;
  c.reps = reps;
  c.threads = unswag_cpu_cores(); /* what the library's threaded path uses */
  const size_t max_bytes = n * 4;
  c.x = alloc_or_die(max_bytes);
  c.y = alloc_or_die(max_bytes);
  c.dx = alloc_or_die(max_bytes);
  c.codes = alloc_or_die(n); /* 8 bits: the largest code buffer */
  par_touch(c.x, max_bytes, c.threads);
  par_touch(c.y, max_bytes, c.threads);
  par_touch(c.dx, max_bytes, c.threads);
  par_touch(c.codes, n, c.threads);

  char model[256], date[64];
  cpu_model(model, sizeof model);
  time_t now = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
  printf("UnSwag %s CPU benchmark\n", unswag_version_string());
  printf("  date      %s\n", date);
  printf("  cpu       %s, nproc %ld, threads used %d\n", model, sysconf(_SC_NPROCESSORS_ONLN),
         c.threads);
#if defined(__VERSION__)
  printf("  compiler  %s (this harness)\n", __VERSION__);
#endif
  printf("  n         %zu elements; median of %d runs after a warm-up; GB = 1e9 bytes\n", n, reps);
  printf(
      "  ratio     median over runs of kernel GB/s / memcpy GB/s, the two timed\n"
      "            alternately (memcpy, kernel, memcpy, kernel, ...)\n");
  printf(
      "  bytes     fwd: read n*es, write n*es + codes; bwd: read n*es + codes, write n*es;\n"
      "            memcpy of n*es bytes counts 2*n*es; same thread count for both\n");
  printf("  path      UNSWAG_PATH_AUTO (vectorised + threaded), except the last row\n");
  char load[128];
  loadavg(load, sizeof load);
  printf("  loadavg   %s (at start; other processes skew the figures)\n\n", load);

  static const struct {
    unswag_activation act;
    int bits;
  } cases[] = {{UNSWAG_RELU, 1},      {UNSWAG_SILU, 1},      {UNSWAG_SILU, 2},
               {UNSWAG_SILU, 4},      {UNSWAG_SILU, 8},      {UNSWAG_GELU, 1},
               {UNSWAG_GELU, 2},      {UNSWAG_GELU, 4},      {UNSWAG_GELU, 8},
               {UNSWAG_GELU_TANH, 1}, {UNSWAG_GELU_TANH, 2}, {UNSWAG_GELU_TANH, 4},
               {UNSWAG_GELU_TANH, 8}};
  const int ncases = (int)(sizeof cases / sizeof cases[0]);
  const unswag_dtype dts[3] = {UNSWAG_F32, UNSWAG_F16, UNSWAG_BF16};

  printf("%-5s %-10s %2s  %9s %9s %6s  %9s %9s %6s\n", "dtype", "act", "k", "memcpy", "fwd GB/s",
         "ratio", "memcpy", "bwd GB/s", "ratio");
  printf("%-5s %-10s %2s  %9s %9s %6s  %9s %9s %6s\n", "-----", "----------", "--", "---------",
         "---------", "------", "---------", "---------", "------");
  unswag_cpu_options autopath = {UNSWAG_PATH_AUTO, 0};
  for (int d = 0; d < 3; ++d) {
    const unswag_dtype dt = dts[d];
    if (only_dtype && strcmp(only_dtype, dtype_name(dt))) continue;
    fill_normal(c.x, dt, n, c.threads);
    for (int k = 0; k < ncases; ++k) {
      unswag_op op = unswag_op_make(cases[k].act, cases[k].bits);
      if (only_act && strcmp(only_act, unswag_activation_name(op.act))) continue;
      result f = measure(&c, &op, dt, 0, &autopath, c.threads);
      result b = measure(&c, &op, dt, 1, &autopath, c.threads);
      printf("%-5s %-10s %2d  %9.2f %9.2f %6.2f  %9.2f %9.2f %6.2f\n", dtype_name(dt),
             unswag_activation_name(op.act), op.bits, f.memcpy_gbs, f.kernel_gbs, f.ratio,
             b.memcpy_gbs, b.kernel_gbs, b.ratio);
      fflush(stdout);
    }
  }
  {
    const unswag_dtype dt = UNSWAG_BF16;
    unswag_op op = unswag_op_make(UNSWAG_SILU, 2);
    unswag_cpu_options vec1 = {UNSWAG_PATH_VECTOR, 1};
    fill_normal(c.x, dt, n, c.threads);
    result f = measure(&c, &op, dt, 0, &vec1, 1);
    result b = measure(&c, &op, dt, 1, &vec1, 1);
    printf(
        "%-5s %-10s %2d  %9.2f %9.2f %6.2f  %9.2f %9.2f %6.2f   <- 1 thread: VECTOR path, "
        "1-thread memcpy\n",
        "bf16", "silu", 2, f.memcpy_gbs, f.kernel_gbs, f.ratio, b.memcpy_gbs, b.kernel_gbs,
        b.ratio);
  }
  loadavg(load, sizeof load);
  printf("\nloadavg at end: %s\n", load);
  printf("target (issue): bf16 silu k=2 forward and backward each >= 0.70 of memcpy\n");
  free(c.x);
  free(c.y);
  free(c.dx);
  free(c.codes);
  return 0;
}

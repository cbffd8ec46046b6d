/*
 * test_cuda - the CUDA kernels against the CPU reference (scalar path).
 *
 *   test_cuda            full run (exhaustive 16-bit, 10^7 random fp32, ...)
 *   test_cuda --quick    reduced run, for compute-sanitizer
 *
 * Includes stochastic codes (test_stochastic): CUDA codes byte for byte equal
 * to the CPU's for all 16-bit inputs, a sample of fp32, two seeds.
 *
 * Needs a CUDA device.  Compares codes byte for byte, 16-bit outputs and all
 * backward outputs bit for bit, fp32 forward outputs bit for bit too (the
 * smooth activations are float-float, src/core/act_math_f32.h: IEEE ops and
 * fmaf only, the same bits on both sides); NaN outputs bit for bit
 * too (both sides write computed NaNs as the canonical quiet NaN).  Ends with
 * "test_cuda: N passed, N failed"; exits nonzero on any failure.
 */
#include <cuda_runtime_api.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../c/check.h"
#include "unswag.h"

/* ---- harness ------------------------------------------------------------- */

static int quick;

#define CUDA_OK(call)                                                                \
  do {                                                                               \
    cudaError_t e_ = (call);                                                         \
    if (e_ != cudaSuccess) {                                                         \
      fprintf(stderr, "FATAL %s:%d: %s -> %s\n", __FILE__, __LINE__, #call,          \
              cudaGetErrorString(e_));                                               \
      printf("test_cuda: %ld passed, %ld failed\n", check_passed, check_failed + 1); \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "FATAL: out of host memory (%zu bytes)\n", n);
    exit(1);
  }
  return p;
}

/* ---- random numbers ---------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd64(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double rnd_unit(void) { return (double)(rnd64() >> 11) * (1.0 / 9007199254740992.0); }

static double rnd_normal(void) {
  double u = rnd_unit(), v = rnd_unit();
  if (u < 1e-300) u = 1e-300;
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static void fill_random_bytes(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = (uint8_t)rnd64();
}

/* ---- the ops under test ------------------------------------------------------ */

typedef struct {
  char name[32];
  unswag_op op;
} config;

static int all_configs(config *c) {
  static const unswag_activation smooth[3] = {UNSWAG_SILU, UNSWAG_GELU, UNSWAG_GELU_TANH};
  static const int bits[4] = {1, 2, 4, 8};
  int k = 0;
  c[k].op = unswag_op_make(UNSWAG_RELU, 1);
  snprintf(c[k++].name, sizeof c->name, "relu");
  c[k].op = unswag_op_make(UNSWAG_LEAKY_RELU, 1);
  c[k].op.slope = 0.2f;
  snprintf(c[k++].name, sizeof c->name, "leaky_relu(0.2)");
  c[k].op = unswag_op_make(UNSWAG_RELU6, 1);
  snprintf(c[k++].name, sizeof c->name, "relu6");
  c[k].op = unswag_op_make(UNSWAG_HARDTANH, 1);
  c[k].op.lo = -0.75f;
  c[k].op.hi = 2.5f;
  snprintf(c[k++].name, sizeof c->name, "hardtanh(-0.75,2.5)");
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 4; ++b) {
      c[k].op = unswag_op_make(smooth[a], bits[b]);
      snprintf(c[k++].name, sizeof c->name, "%s/k%d", unswag_activation_name(smooth[a]), bits[b]);
    }
  return k; /* 16 */
}

static const char *dtype_name(unswag_dtype dt) {
  return dt == UNSWAG_F32 ? "f32" : dt == UNSWAG_F16 ? "f16" : "bf16";
}

static size_t code_bytes(size_t n, int bits) {
  size_t b = 0;
  if (unswag_code_bytes(n, bits, &b) != UNSWAG_OK) {
    fprintf(stderr, "FATAL: unswag_code_bytes(%zu, %d)\n", n, bits);
    exit(1);
  }
  return b;
}

/* ---- comparisons --------------------------------------------------------------- */

static uint32_t elem(const void *p, size_t i, size_t es) {
  if (es == 2) {
    uint16_t v;
    memcpy(&v, (const uint8_t *)p + i * 2, 2);
    return v;
  }
  uint32_t v;
  memcpy(&v, (const uint8_t *)p + i * 4, 4);
  return v;
}

/* Mismatches of got vs ref, bit for bit; prints the
 * first few with the input element that produced them. */
static size_t compare_data(const char *what, const void *ref, const void *got, size_t n,
                           unswag_dtype dt, const void *input) {
  const size_t es = unswag_dtype_size(dt);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t r = elem(ref, i, es), g = elem(got, i, es);
    if (r == g) continue;
    if (++bad <= 4)
      fprintf(stderr, "  %s: element %zu: input 0x%0*x cpu 0x%0*x gpu 0x%0*x\n", what, i,
              (int)es * 2, input ? elem(input, i, es) : 0u, (int)es * 2, r, (int)es * 2, g);
  }
  return bad;
}

static size_t compare_bytes(const char *what, const uint8_t *ref, const uint8_t *got, size_t n) {
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i)
    if (ref[i] != got[i] && ++bad <= 4)
      fprintf(stderr, "  %s: byte %zu: cpu 0x%02x gpu 0x%02x\n", what, i, ref[i], got[i]);
  return bad;
}

/* ---- device arenas with guard bytes -------------------------------------------- */

#define GUARD 64      /* bytes checked untouched on each side of an output */
#define MAX_OFFSET 64 /* largest byte offset a case puts a pointer at       */
#define PATTERN 0xA5

typedef struct {
  uint8_t *dev;  /* device allocation */
  uint8_t *host; /* host copy for checks */
  size_t size;
} arena;

static arena A_x, A_y, A_codes, A_dy, A_dx, A_y2, A_codes2;

static void arena_init(arena *a, size_t bytes) {
  a->size = bytes + 2 * GUARD + MAX_OFFSET + 64;
  CUDA_OK(cudaMalloc((void **)&a->dev, a->size));
  a->host = (uint8_t *)xmalloc(a->size);
}

static void arena_free(arena *a) {
  cudaFree(a->dev);
  free(a->host);
}

/* Region [0, GUARD + off + bytes + GUARD) filled with the pattern; returns
 * the device pointer at GUARD + off. */
static uint8_t *arena_prepare(arena *a, size_t off, size_t bytes) {
  CUDA_OK(cudaMemset(a->dev, PATTERN, GUARD + off + bytes + GUARD));
  return a->dev + GUARD + off;
}

/* Copies the region back; returns the number of guard bytes changed. */
static size_t arena_fetch(arena *a, size_t off, size_t bytes) {
  const size_t total = GUARD + off + bytes + GUARD;
  CUDA_OK(cudaMemcpy(a->host, a->dev, total, cudaMemcpyDeviceToHost));
  size_t bad = 0;
  for (size_t i = 0; i < GUARD + off; ++i) bad += a->host[i] != PATTERN;
  for (size_t i = GUARD + off + bytes; i < total; ++i) bad += a->host[i] != PATTERN;
  return bad;
}

static const uint8_t *arena_data(const arena *a, size_t off) { return a->host + GUARD + off; }

/* ---- one forward + backward case ------------------------------------------------ */

typedef struct {
  size_t ox, oy, oc, ody, odx; /* byte offsets of x, y, codes, dy, dx */
  int inplace;                 /* y = x and dx = dy                   */
  int twice;                   /* run each call twice, compare bytes  */
} layout;

static const unswag_cpu_options scalar_path = {UNSWAG_PATH_SCALAR, 1};

/* Forward on x (n elements), then backward on dy with the codes of the
 * forward, or with bwd_codes if given.  Checks everything against the CPU
 * scalar kernels; returns 1 if all matched. */
static int run_case(const char *label, const unswag_op *op, unswag_dtype dt, const void *x,
                    const void *dy, const uint8_t *bwd_codes, size_t n, layout L) {
  const size_t es = unswag_dtype_size(dt), nb = n * es, cb = code_bytes(n, op->bits);
  const long failed_before = check_failed;
  uint8_t *y_ref = (uint8_t *)xmalloc(nb), *c_ref = (uint8_t *)xmalloc(cb);
  uint8_t *dx_ref = (uint8_t *)xmalloc(nb);
  unswag_status s = unswag_forward_advanced(op, dt, x, y_ref, c_ref, n, &scalar_path);
  CHECK(s == UNSWAG_OK, "%s: CPU forward: %s", label, unswag_status_string(s));
  const uint8_t *codes_for_bwd = bwd_codes ? bwd_codes : c_ref;
  s = unswag_backward_advanced(op, dt, dy, codes_for_bwd, dx_ref, n, &scalar_path);
  CHECK(s == UNSWAG_OK, "%s: CPU backward: %s", label, unswag_status_string(s));

  /* forward */
  for (int rep = 0; rep < (L.twice ? 2 : 1); ++rep) {
    uint8_t *dX = arena_prepare(&A_x, L.ox, nb);
    if (nb) CUDA_OK(cudaMemcpy(dX, x, nb, cudaMemcpyHostToDevice));
    arena *ya = L.inplace ? &A_x : (rep ? &A_y2 : &A_y);
    const size_t oy = L.inplace ? L.ox : L.oy;
    uint8_t *dY = L.inplace ? dX : arena_prepare(ya, oy, nb);
    arena *ca = rep ? &A_codes2 : &A_codes;
    uint8_t *dC = arena_prepare(ca, L.oc, cb);
    s = unswag_forward_cuda(op, dt, dX, dY, dC, n, NULL);
    CHECK(s == UNSWAG_OK, "%s: forward_cuda: %s (%s)", label, unswag_status_string(s),
          unswag_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    CHECK(cudaGetLastError() == cudaSuccess, "%s: pending CUDA error after forward", label);
    size_t g = arena_fetch(ya, oy, nb);
    CHECK(g == 0, "%s: forward wrote %zu guard bytes around y", label, g);
    g = arena_fetch(ca, L.oc, cb);
    CHECK(g == 0, "%s: forward wrote %zu guard bytes around codes", label, g);
    char what[160];
    snprintf(what, sizeof what, "%s y", label);
    size_t bad = compare_data(what, y_ref, arena_data(ya, oy), n, dt, x);
    CHECK(bad == 0, "%s: %zu y elements differ from the CPU", label, bad);
    snprintf(what, sizeof what, "%s codes", label);
    bad = compare_bytes(what, c_ref, arena_data(ca, L.oc), cb);
    CHECK(bad == 0, "%s: %zu code bytes differ from the CPU", label, bad);
    if (rep == 1) {
      CHECK(L.inplace || memcmp(arena_data(&A_y, L.oy), arena_data(&A_y2, L.oy), nb) == 0,
            "%s: second forward wrote other y bytes", label);
      CHECK(memcmp(arena_data(&A_codes, L.oc), arena_data(&A_codes2, L.oc), cb) == 0,
            "%s: second forward wrote other code bytes", label);
    }
  }

  /* backward */
  for (int rep = 0; rep < (L.twice ? 2 : 1); ++rep) {
    uint8_t *dDY = arena_prepare(&A_dy, L.ody, nb);
    if (nb) CUDA_OK(cudaMemcpy(dDY, dy, nb, cudaMemcpyHostToDevice));
    uint8_t *dC = arena_prepare(&A_codes, L.oc, cb);
    if (cb) CUDA_OK(cudaMemcpy(dC, codes_for_bwd, cb, cudaMemcpyHostToDevice));
    arena *xa = L.inplace ? &A_dy : (rep ? &A_y2 : &A_dx);
    const size_t odx = L.inplace ? L.ody : L.odx;
    uint8_t *dDX = L.inplace ? dDY : arena_prepare(xa, odx, nb);
    s = unswag_backward_cuda(op, dt, dDY, dC, dDX, n, NULL);
    CHECK(s == UNSWAG_OK, "%s: backward_cuda: %s (%s)", label, unswag_status_string(s),
          unswag_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    CHECK(cudaGetLastError() == cudaSuccess, "%s: pending CUDA error after backward", label);
    size_t g = arena_fetch(xa, odx, nb);
    CHECK(g == 0, "%s: backward wrote %zu guard bytes around dx", label, g);
    g = arena_fetch(&A_codes, L.oc, cb);
    CHECK(g == 0 && memcmp(arena_data(&A_codes, L.oc), codes_for_bwd, cb) == 0,
          "%s: backward changed the codes or their guards", label);
    char what[160];
    snprintf(what, sizeof what, "%s dx", label);
    size_t bad = compare_data(what, dx_ref, arena_data(xa, odx), n, dt, dy);
    CHECK(bad == 0, "%s: %zu dx elements differ from the CPU", label, bad);
    if (rep == 1)
      CHECK(L.inplace || memcmp(arena_data(&A_dx, L.odx), arena_data(&A_y2, L.odx), nb) == 0,
            "%s: second backward wrote other dx bytes", label);
  }
  free(y_ref);
  free(c_ref);
  free(dx_ref);
  return check_failed == failed_before;
}

/* ---- 1. every 16-bit input --------------------------------------------------------- */

static void test_exhaustive16(void) {
  const size_t n = 65536;
  uint16_t *x = (uint16_t *)xmalloc(n * 2), *dy = (uint16_t *)xmalloc(n * 2);
  uint8_t *rcodes = (uint8_t *)xmalloc(n);
  for (size_t i = 0; i < n; ++i) {
    x[i] = (uint16_t)i;
    dy[i] = (uint16_t)(i * 40503u + 12345u); /* a permutation of all values */
  }
  config cfg[16];
  const int nc = all_configs(cfg);
  const unswag_dtype dts[2] = {UNSWAG_F16, UNSWAG_BF16};
  int ok = 0, total = 0;
  for (int d = 0; d < 2; ++d)
    for (int c = 0; c < nc; ++c) {
      char label[256];
      layout L = {0};
      L.twice = 1;
      snprintf(label, sizeof label, "exhaustive %s %.31s", dtype_name(dts[d]), cfg[c].name);
      ok += run_case(label, &cfg[c].op, dts[d], x, dy, NULL, n, L);
      /* backward again with random codes: every level index */
      fill_random_bytes(rcodes, code_bytes(n, cfg[c].op.bits));
      snprintf(label, sizeof label, "exhaustive %s %.31s (random codes)", dtype_name(dts[d]),
               cfg[c].name);
      L.twice = 0;
      ok += run_case(label, &cfg[c].op, dts[d], x, dy, rcodes, n, L);
      total += 2;
    }
  printf("  exhaustive 16-bit: %d/%d cases match the CPU\n", ok, total);
  free(x);
  free(dy);
  free(rcodes);
}

/* ---- 2. random fp32 with specials --------------------------------------------------- */

static float f32_of(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}

static void test_fp32(size_t n) {
  float *x = (float *)xmalloc(n * 4), *dy = (float *)xmalloc(n * 4);
  uint8_t *rcodes = (uint8_t *)xmalloc(n);
  size_t k = 0;
  /* specials */
  const uint32_t special_bits[] = {
      0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7FC12345u,
      0xFF812345u, 0x7F800001u, 0x00000001u, 0x80000001u, 0x007FFFFFu, 0x807FFFFFu, 0x00800000u,
      0x80800000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x3F800000u, 0xBF800000u, 0x40C00000u, 0xC0C00000u,
      0x42B00000u, 0xC2B00000u, 0x42DC0000u, 0xC2DC0000u, 0x4F000000u, 0xCF000000u};
  for (size_t i = 0; i < sizeof special_bits / sizeof *special_bits; ++i)
    x[k++] = f32_of(special_bits[i]);
  const float edges[] = {0.0f, 6.0f, -0.75f, 2.5f, -1.0f, 1.0f};
  for (size_t i = 0; i < sizeof edges / sizeof *edges; ++i) {
    x[k++] = edges[i];
    x[k++] = nextafterf(edges[i], INFINITY);
    x[k++] = nextafterf(edges[i], -INFINITY);
  }
  /* every boundary of every built-in codebook, and its neighbours */
  static const unswag_activation smooth[3] = {UNSWAG_SILU, UNSWAG_GELU, UNSWAG_GELU_TANH};
  for (int a = 0; a < 3; ++a)
    for (int b = 1; b <= 8; b *= 2) {
      unswag_codebook book;
      if (unswag_codebook_builtin(smooth[a], b, &book) != UNSWAG_OK) continue;
      for (int j = 0; j < (1 << b) - 1 && k + 3 <= n; ++j) {
        x[k++] = book.boundaries[j];
        x[k++] = nextafterf(book.boundaries[j], INFINITY);
        x[k++] = nextafterf(book.boundaries[j], -INFINITY);
      }
    }
  /* random: bit patterns, unit normals, normals over many scales */
  for (; k < n; ++k) {
    switch (k % 4) {
      case 0: x[k] = f32_of((uint32_t)rnd64()); break;
      case 1: x[k] = (float)rnd_normal(); break;
      case 2: x[k] = (float)(4.0 * rnd_normal()); break;
      default: x[k] = (float)(rnd_normal() * pow(10.0, 8.0 * rnd_unit() - 4.0)); break;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    switch (i % 16) {
      case 0: dy[i] = f32_of((uint32_t)rnd64()); break;
      default: dy[i] = (float)rnd_normal(); break;
    }
  }
  dy[1] = INFINITY, dy[2] = -INFINITY, dy[3] = NAN, dy[4] = 0.0f, dy[5] = -0.0f;

  config cfg[16];
  const int nc = all_configs(cfg);
  int ok = 0, total = 0;
  for (int c = 0; c < nc; ++c) {
    char label[256];
    layout L = {0};
    L.twice = 1;
    snprintf(label, sizeof label, "random f32 %.31s", cfg[c].name);
    ok += run_case(label, &cfg[c].op, UNSWAG_F32, x, dy, NULL, n, L);
    fill_random_bytes(rcodes, code_bytes(n, cfg[c].op.bits));
    snprintf(label, sizeof label, "random f32 %.31s (random codes)", cfg[c].name);
    L.twice = 0;
    ok += run_case(label, &cfg[c].op, UNSWAG_F32, x, dy, rcodes, n, L);
    total += 2;
  }
  printf("  random fp32 (n = %zu): %d/%d cases match the CPU\n", n, ok, total);
  free(x);
  free(dy);
  free(rcodes);
}

/* ---- inputs for the smaller cases ----------------------------------------------------- */

/* n random elements of dtype dt: normals of a few scales plus some specials. */
static void random_data(void *p, size_t n, unswag_dtype dt) {
  for (size_t i = 0; i < n; ++i) {
    float v;
    switch (rnd64() % 8) {
      case 0: v = f32_of((uint32_t)rnd64()); break;
      case 1: v = (float)(8.0 * rnd_normal()); break;
      default: v = (float)rnd_normal(); break;
    }
    if (dt == UNSWAG_F32) {
      memcpy((uint8_t *)p + 4 * i, &v, 4);
    } else {
      uint16_t h = dt == UNSWAG_BF16 ? unswag_f32_to_bf16(v) : unswag_f32_to_f16(v);
      if (rnd64() % 16 == 0) h = (uint16_t)rnd64(); /* any pattern, NaNs included */
      memcpy((uint8_t *)p + 2 * i, &h, 2);
    }
  }
}

/* ---- 3. unaligned pointers -------------------------------------------------------------- */

static void test_offsets(void) {
  const unswag_dtype dts[3] = {UNSWAG_F32, UNSWAG_F16, UNSWAG_BF16};
  config cfg[16];
  const int nc = all_configs(cfg);
  const size_t n = 9000 + 5; /* several blocks and a tail */
  uint8_t *x = (uint8_t *)xmalloc(n * 4), *dy = (uint8_t *)xmalloc(n * 4);
  int ok = 0, total = 0;
  for (int d = 0; d < 3; ++d) {
    const size_t es = unswag_dtype_size(dts[d]);
    /* element offsets 0..3 and one that is not a multiple of the element size */
    const size_t data_off[5] = {0, es, 2 * es, 3 * es, 1};
    const size_t code_off[3] = {0, 1, 3};
    random_data(x, n, dts[d]);
    random_data(dy, n, dts[d]);
    for (int c = 0; c < nc; ++c) {
      if (quick && c % 3 != 0) continue;
      for (int i = 0; i < 5; ++i)
        for (int j = 0; j < 5; ++j)
          for (int m = 0; m < 3; ++m) {
            if (quick && (i + j + m) % 4 != 0) continue;
            layout L = {0};
            L.ox = L.ody = data_off[i];
            L.oy = L.odx = data_off[j];
            L.oc = code_off[m];
            char label[256];
            snprintf(label, sizeof label, "offsets %s %.31s x+%zu y+%zu codes+%zu",
                     dtype_name(dts[d]), cfg[c].name, L.ox, L.oy, L.oc);
            ok += run_case(label, &cfg[c].op, dts[d], x, dy, NULL, n, L);
            ++total;
          }
      /* in place: y = x, dx = dy, aligned and not */
      for (int i = 0; i < 5; i += 2) {
        layout L = {0};
        L.ox = L.ody = data_off[i];
        L.inplace = 1;
        char label[256];
        snprintf(label, sizeof label, "in place %s %.31s x+%zu", dtype_name(dts[d]), cfg[c].name,
                 L.ox);
        ok += run_case(label, &cfg[c].op, dts[d], x, dy, NULL, n, L);
        ++total;
      }
    }
  }
  printf("  unaligned / in-place pointers: %d/%d cases match the CPU\n", ok, total);
  free(x);
  free(dy);
}

/* ---- 4. every tail length ---------------------------------------------------------------- */

static void test_tails(void) {
  const unswag_dtype dts[3] = {UNSWAG_F32, UNSWAG_F16, UNSWAG_BF16};
  config cfg[16];
  const int nc = all_configs(cfg);
  const size_t max_n = 300;
  uint8_t *x = (uint8_t *)xmalloc(max_n * 4), *dy = (uint8_t *)xmalloc(max_n * 4);
  int ok = 0, total = 0;
  for (int d = 0; d < 3; ++d) {
    const size_t es = unswag_dtype_size(dts[d]);
    random_data(x, max_n, dts[d]);
    random_data(dy, max_n, dts[d]);
    for (int c = 0; c < nc; ++c) {
      /* relu, leaky, hardtanh, every smooth k of silu, gelu k2, gelu_tanh k8 */
      static const int pick[] = {1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1};
      if (!pick[c] || (quick && c % 2 == 0)) continue;
      for (size_t n = 0; n <= max_n; ++n) {
        if (quick && n > 40 && n % 61 != 0) continue;
        for (int v = 0; v < 2; ++v) { /* aligned (vector kernel), then not */
          layout L = {0};
          if (v) L.ox = L.oy = L.ody = L.odx = es, L.oc = 1;
          char label[256];
          snprintf(label, sizeof label, "tail %s %.31s n=%zu %s", dtype_name(dts[d]), cfg[c].name,
                   n, v ? "unaligned" : "aligned");
          ok += run_case(label, &cfg[c].op, dts[d], x, dy, NULL, n, L);
          ++total;
        }
      }
    }
  }
  printf("  tails: %d/%d cases match the CPU\n", ok, total);
  free(x);
  free(dy);
}

/* ---- stochastic codes: the CPU's bytes for a given seed ----------------------------- */

static void test_stochastic(void) {
  static const unswag_activation smooth[3] = {UNSWAG_SILU, UNSWAG_GELU, UNSWAG_GELU_TANH};
  static const uint64_t seeds[2] = {7, 0xDEADBEEF12345678ull};
  const size_t n16 = 65536, n32 = quick ? 65536 : (size_t)1 << 20;
  uint16_t *x16 = (uint16_t *)xmalloc(n16 * 2), *dy16 = (uint16_t *)xmalloc(n16 * 2);
  float *x32 = (float *)xmalloc(n32 * 4), *dy32 = (float *)xmalloc(n32 * 4);
  for (size_t i = 0; i < n16; ++i) {
    x16[i] = (uint16_t)i;
    dy16[i] = (uint16_t)(i * 40503u + 12345u);
  }
  for (size_t i = 0; i < n32; ++i) {
    x32[i] = i % 8 == 0 ? f32_of((uint32_t)rnd64()) : (float)(3.0 * rnd_normal());
    dy32[i] = (float)rnd_normal();
  }
  int ok = 0, total = 0;
  for (int a = 0; a < 3; ++a)
    for (int b = 1; b <= 8; b *= 2)
      for (int s = 0; s < 2; ++s) {
        unswag_op op = unswag_op_make(smooth[a], b);
        op.code_kind = UNSWAG_CODES_STOCHASTIC;
        op.seed = seeds[s];
        char label[256];
        layout L = {0};
        L.twice = 1;
        for (int d = UNSWAG_F16; d <= UNSWAG_BF16; ++d) {
          snprintf(label, sizeof label, "stochastic %s %s/k%d seed %llx",
                   dtype_name((unswag_dtype)d), unswag_activation_name(smooth[a]), b,
                   (unsigned long long)seeds[s]);
          ok += run_case(label, &op, (unswag_dtype)d, x16, dy16, NULL, n16, L);
          ++total;
        }
        snprintf(label, sizeof label, "stochastic f32 %s/k%d seed %llx",
                 unswag_activation_name(smooth[a]), b, (unsigned long long)seeds[s]);
        ok += run_case(label, &op, UNSWAG_F32, x32, dy32, NULL, n32, L);
        ++total;
        /* odd byte offsets (byte-wise loads), in place, a partial last group */
        layout O = {0};
        O.ox = 1, O.oc = 3, O.ody = 1, O.inplace = 1;
        snprintf(label, sizeof label, "stochastic bf16 %s/k%d unaligned in-place tail",
                 unswag_activation_name(smooth[a]), b);
        ok += run_case(label, &op, UNSWAG_BF16, x16, dy16, NULL, n16 - 3, O);
        ++total;
      }
  printf("  stochastic codes: %d/%d cases match the CPU\n", ok, total);
  free(x16);
  free(dy16);
  free(x32);
  free(dy32);
}

/* ---- 5. bad input leaves every output untouched ----------------------------------------- */

static int untouched(const arena *a, size_t bytes) {
  CUDA_OK(cudaDeviceSynchronize());
  uint8_t *h = (uint8_t *)xmalloc(bytes);
  CUDA_OK(cudaMemcpy(h, a->dev, bytes, cudaMemcpyDeviceToHost));
  size_t bad = 0;
  for (size_t i = 0; i < bytes; ++i) bad += h[i] != PATTERN;
  free(h);
  return bad == 0;
}

static void test_bad_input(void) {
  const size_t n = 1000, nb = n * 2;
  uint8_t *hx = (uint8_t *)xmalloc(n * 4), *hbuf = (uint8_t *)xmalloc(n * 4);
  random_data(hx, n, UNSWAG_BF16);
  memset(hbuf, PATTERN, n * 4);
  const size_t span = n * 4 + 2 * GUARD;
  CUDA_OK(cudaMemcpy(A_x.dev, hx, nb, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(A_dy.dev, hx, nb, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(A_y.dev, PATTERN, span));
  CUDA_OK(cudaMemset(A_dx.dev, PATTERN, span));
  CUDA_OK(cudaMemset(A_codes.dev, PATTERN, span));
  uint8_t *x = A_x.dev, *y = A_y.dev, *codes = A_codes.dev, *dy = A_dy.dev, *dx = A_dx.dev;
  const unswag_dtype bf = UNSWAG_BF16;

  unswag_op relu = unswag_op_make(UNSWAG_RELU, 1), silu = unswag_op_make(UNSWAG_SILU, 4);
  unswag_op relu2 = unswag_op_make(UNSWAG_RELU, 2), silu3 = unswag_op_make(UNSWAG_SILU, 3);
  unswag_op silu0 = unswag_op_make(UNSWAG_SILU, 0),
            act99 = unswag_op_make((unswag_activation)99, 1);
  unswag_op actneg = unswag_op_make((unswag_activation)-1, 1);
  unswag_op ht = unswag_op_make(UNSWAG_HARDTANH, 1);
  ht.lo = ht.hi = 0.5f;
  unswag_op htnan = unswag_op_make(UNSWAG_HARDTANH, 1);
  htnan.lo = NAN;
  unswag_op leaky = unswag_op_make(UNSWAG_LEAKY_RELU, 1);
  leaky.slope = INFINITY;
  unswag_codebook book;
  unswag_codebook_builtin(UNSWAG_SILU, 2, &book);
  unswag_op cb_bits = unswag_op_make(UNSWAG_SILU, 4);
  cb_bits.codebook = &book; /* a 2-bit codebook on a 4-bit op */
  unswag_codebook unsorted = book;
  unsorted.boundaries[0] = unsorted.boundaries[2] + 1.0f;
  unswag_op cb_unsorted = unswag_op_make(UNSWAG_SILU, 2);
  cb_unsorted.codebook = &unsorted;
  unswag_codebook nonfinite = book;
  nonfinite.boundaries[1] = NAN;
  unswag_op cb_nan = unswag_op_make(UNSWAG_SILU, 2);
  cb_nan.codebook = &nonfinite;

  struct {
    const char *what;
    const unswag_op *op;
    unswag_dtype dt;
    const void *in;
    void *out;
    void *codes;
    size_t n;
    unswag_status want;
  } cases[] = {
      {"x on the host", &relu, bf, hx, y, codes, n, UNSWAG_ERR_BAD_POINTER},
      {"y on the host", &relu, bf, x, hbuf, codes, n, UNSWAG_ERR_BAD_POINTER},
      {"codes on the host", &silu, bf, x, y, hbuf, n, UNSWAG_ERR_BAD_POINTER},
      {"x NULL", &relu, bf, NULL, y, codes, n, UNSWAG_ERR_NULL_POINTER},
      {"y NULL", &relu, bf, x, NULL, codes, n, UNSWAG_ERR_NULL_POINTER},
      {"codes NULL", &silu, bf, x, y, NULL, n, UNSWAG_ERR_NULL_POINTER},
      {"op NULL", NULL, bf, x, y, codes, n, UNSWAG_ERR_NULL_POINTER},
      {"relu bits 2", &relu2, bf, x, y, codes, n, UNSWAG_ERR_BAD_BITS},
      {"silu bits 3", &silu3, bf, x, y, codes, n, UNSWAG_ERR_BAD_BITS},
      {"silu bits 0", &silu0, bf, x, y, codes, n, UNSWAG_ERR_BAD_BITS},
      {"bad bits before host pointer", &silu3, bf, hx, y, codes, n, UNSWAG_ERR_BAD_BITS},
      {"activation 99", &act99, bf, x, y, codes, n, UNSWAG_ERR_BAD_ACTIVATION},
      {"activation -1", &actneg, bf, x, y, codes, n, UNSWAG_ERR_BAD_ACTIVATION},
      {"dtype 3", &relu, (unswag_dtype)3, x, y, codes, n, UNSWAG_ERR_BAD_DTYPE},
      {"dtype -1", &relu, (unswag_dtype)-1, x, y, codes, n, UNSWAG_ERR_BAD_DTYPE},
      {"hardtanh lo == hi", &ht, bf, x, y, codes, n, UNSWAG_ERR_BAD_PARAM},
      {"hardtanh lo NaN", &htnan, bf, x, y, codes, n, UNSWAG_ERR_BAD_PARAM},
      {"leaky slope inf", &leaky, bf, x, y, codes, n, UNSWAG_ERR_BAD_PARAM},
      {"codebook bits mismatch", &cb_bits, bf, x, y, codes, n, UNSWAG_ERR_BAD_CODEBOOK},
      {"codebook unsorted", &cb_unsorted, bf, x, y, codes, n, UNSWAG_ERR_BAD_CODEBOOK},
      {"codebook NaN", &cb_nan, bf, x, y, codes, n, UNSWAG_ERR_BAD_CODEBOOK},
      {"n overflows", &relu, bf, x, y, codes, SIZE_MAX, UNSWAG_ERR_SIZE_OVERFLOW},
  };
  const int ncases = (int)(sizeof cases / sizeof cases[0]);
  for (int i = 0; i < ncases; ++i) {
    /* forward: (x, y, codes); backward: (dy = in, codes, dx = out) */
    for (int dir = 0; dir < 2; ++dir) {
      const void *in = cases[i].in == x ? (dir ? (const void *)dy : (const void *)x) : cases[i].in;
      void *out = cases[i].out == y ? (dir ? (void *)dx : (void *)y) : cases[i].out;
      unswag_status s =
          dir == 0 ? unswag_forward_cuda(cases[i].op, cases[i].dt, in, out,
                                         (uint8_t *)cases[i].codes, cases[i].n, NULL)
                   : unswag_backward_cuda(cases[i].op, cases[i].dt, in,
                                          (const uint8_t *)cases[i].codes, out, cases[i].n, NULL);
      CHECK(s == cases[i].want, "%s %s: got %s, want %s", dir ? "backward" : "forward",
            cases[i].what, unswag_status_string(s), unswag_status_string(cases[i].want));
      CHECK(unswag_last_error()[0] != '\0', "%s: no unswag_last_error detail", cases[i].what);
      CHECK(cudaGetLastError() == cudaSuccess, "%s: left a pending CUDA error", cases[i].what);
    }
  }
  /* the backward reads codes: a host code buffer there too */
  unswag_status s = unswag_backward_cuda(&silu, bf, dy, hbuf, dx, n, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "backward host codes: got %s", unswag_status_string(s));
  CHECK(untouched(&A_y, span), "a failed call wrote y");
  CHECK(untouched(&A_dx, span), "a failed call wrote dx");
  CHECK(untouched(&A_codes, span), "a failed call wrote codes");
  for (size_t i = 0; i < n * 4; ++i)
    if (hbuf[i] != PATTERN) {
      CHECK(0, "a failed call wrote the host buffer");
      break;
    }

  /* n == 0: OK, nothing written, NULL pointers allowed */
  s = unswag_forward_cuda(&silu, bf, x, y, codes, 0, NULL);
  CHECK(s == UNSWAG_OK, "forward n=0: %s", unswag_status_string(s));
  s = unswag_forward_cuda(&silu, bf, NULL, NULL, NULL, 0, NULL);
  CHECK(s == UNSWAG_OK, "forward n=0 NULL: %s", unswag_status_string(s));
  s = unswag_backward_cuda(&silu, bf, NULL, NULL, NULL, 0, NULL);
  CHECK(s == UNSWAG_OK, "backward n=0 NULL: %s", unswag_status_string(s));
  s = unswag_forward_cuda(&relu, bf, hx, hbuf, hbuf, 0, NULL);
  CHECK(s == UNSWAG_OK, "forward n=0 host pointers: %s", unswag_status_string(s));
  CHECK(untouched(&A_y, span) && untouched(&A_codes, span), "n=0 wrote something");
  CHECK(unswag_cuda_built() == 1, "unswag_cuda_built() = %d", unswag_cuda_built());

  /* pinned host memory (mapped at the same address) and managed memory work */
  {
    const unswag_op op = unswag_op_make(UNSWAG_GELU, 2);
    uint8_t *pin = NULL, *man = NULL;
    CUDA_OK(cudaMallocHost((void **)&pin, nb));
    CUDA_OK(cudaMallocManaged((void **)&man, nb + n, cudaMemAttachGlobal));
    memcpy(pin, hx, nb);
    uint8_t *y_ref = (uint8_t *)xmalloc(nb), *c_ref = (uint8_t *)xmalloc(n);
    unswag_forward_advanced(&op, bf, hx, y_ref, c_ref, n, &scalar_path);
    s = unswag_forward_cuda(&op, bf, pin, man, man + nb, n, NULL);
    CHECK(s == UNSWAG_OK, "pinned x, managed y: %s (%s)", unswag_status_string(s),
          unswag_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    CHECK(compare_data("pinned/managed y", y_ref, man, n, bf, hx) == 0 &&
              compare_bytes("pinned/managed codes", c_ref, man + nb, code_bytes(n, 2)) == 0,
          "pinned/managed results differ from the CPU");
    free(y_ref);
    free(c_ref);
    CUDA_OK(cudaFreeHost(pin));
    CUDA_OK(cudaFree(man));
  }
  printf("  bad input: statuses checked, outputs untouched\n");
  free(hx);
  free(hbuf);
}

/* ---- 6. a non-default stream and a CUDA graph ----------------------------------------- */

static void test_graph(void) {
  const size_t n = quick ? 100003 : (1u << 22) + 3;
  const unswag_dtype dts[3] = {UNSWAG_BF16, UNSWAG_F16, UNSWAG_F32};
  unswag_op ops[3];
  ops[0] = unswag_op_make(UNSWAG_SILU, 8);
  ops[1] = unswag_op_make(UNSWAG_RELU, 1);
  ops[2] = unswag_op_make(UNSWAG_GELU, 2);
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  uint8_t *x = (uint8_t *)xmalloc(n * 4), *dy = (uint8_t *)xmalloc(n * 4);
  uint8_t *y_ref = (uint8_t *)xmalloc(n * 4), *c_ref = (uint8_t *)xmalloc(n);
  uint8_t *dx_ref = (uint8_t *)xmalloc(n * 4), *got = (uint8_t *)xmalloc(n * 4);
  for (int t = 0; t < 3; ++t) {
    const unswag_dtype dt = dts[t];
    const unswag_op *op = &ops[t];
    const size_t es = unswag_dtype_size(dt), nb = n * es, cb = code_bytes(n, op->bits);
    random_data(x, n, dt);
    random_data(dy, n, dt);
    unswag_forward_advanced(op, dt, x, y_ref, c_ref, n, &scalar_path);
    unswag_backward_advanced(op, dt, dy, c_ref, dx_ref, n, &scalar_path);
    CUDA_OK(cudaMemcpy(A_x.dev, x, nb, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(A_dy.dev, dy, nb, cudaMemcpyHostToDevice));
    for (int mode = 0; mode < 2; ++mode) { /* 0: plain launches on st, 1: graph */
      CUDA_OK(cudaMemset(A_y.dev, PATTERN, nb));
      CUDA_OK(cudaMemset(A_codes.dev, PATTERN, cb));
      CUDA_OK(cudaMemset(A_dx.dev, PATTERN, nb));
      CUDA_OK(cudaDeviceSynchronize());
      cudaGraph_t graph = NULL;
      cudaGraphExec_t exec = NULL;
      if (mode == 1) CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
      unswag_status s1 = unswag_forward_cuda(op, dt, A_x.dev, A_y.dev, A_codes.dev, n, st);
      unswag_status s2 = unswag_backward_cuda(op, dt, A_dy.dev, A_codes.dev, A_dx.dev, n, st);
      if (mode == 1) {
        cudaError_t e = cudaStreamEndCapture(st, &graph);
        CHECK(e == cudaSuccess, "%s graph capture: %s", dtype_name(dt), cudaGetErrorString(e));
        if (e != cudaSuccess) {
          (void)cudaGetLastError();
          continue;
        }
      }
      CHECK(s1 == UNSWAG_OK && s2 == UNSWAG_OK, "%s %s: forward %s / backward %s (%s)",
            dtype_name(dt), mode ? "captured" : "stream", unswag_status_string(s1),
            unswag_status_string(s2), unswag_last_error());
      if (mode == 1) {
        CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
        for (int r = 0; r < 2; ++r) CUDA_OK(cudaGraphLaunch(exec, st)); /* replay twice */
      }
      CUDA_OK(cudaStreamSynchronize(st));
      CHECK(cudaGetLastError() == cudaSuccess, "pending CUDA error after the graph test");
      const char *m = mode ? "graph" : "stream";
      CUDA_OK(cudaMemcpy(got, A_y.dev, nb, cudaMemcpyDeviceToHost));
      size_t bad = compare_data(m, y_ref, got, n, dt, x);
      CHECK(bad == 0, "%s %s: %zu y elements differ", m, dtype_name(dt), bad);
      CUDA_OK(cudaMemcpy(got, A_codes.dev, cb, cudaMemcpyDeviceToHost));
      CHECK(memcmp(got, c_ref, cb) == 0, "%s %s: codes differ", m, dtype_name(dt));
      CUDA_OK(cudaMemcpy(got, A_dx.dev, nb, cudaMemcpyDeviceToHost));
      bad = compare_data(m, dx_ref, got, n, dt, dy);
      CHECK(bad == 0, "%s %s: %zu dx elements differ", m, dtype_name(dt), bad);
      if (exec) CUDA_OK(cudaGraphExecDestroy(exec));
      if (graph) CUDA_OK(cudaGraphDestroy(graph));
    }
  }
  CUDA_OK(cudaStreamDestroy(st));
  printf("  non-default stream and CUDA graph capture: checked\n");
  free(x);
  free(dy);
  free(y_ref);
  free(c_ref);
  free(dx_ref);
  free(got);
}

/* ---- main ----------------------------------------------------------------------------- */

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--quick") == 0) {
      quick = 1;
    } else {
      fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  int ndev = 0;
  cudaError_t e = cudaGetDeviceCount(&ndev);
  if (e != cudaSuccess || ndev == 0) {
    fprintf(stderr, "no CUDA device: %s\n", cudaGetErrorString(e));
    printf("test_cuda: 0 passed, 1 failed\n");
    return 1;
  }
  struct cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  printf("test_cuda%s on %s (sm_%d%d), libunswag %s\n", quick ? " --quick" : "", prop.name,
         prop.major, prop.minor, unswag_version_string());

  const size_t n_fp32 = quick ? 100000 : 10000000;
  const size_t max_bytes = (n_fp32 > (1u << 22) + 3 ? n_fp32 : (1u << 22) + 3) * 4;
  arena_init(&A_x, max_bytes);
  arena_init(&A_y, max_bytes);
  arena_init(&A_y2, max_bytes);
  arena_init(&A_codes, max_bytes);
  arena_init(&A_codes2, max_bytes);
  arena_init(&A_dy, max_bytes);
  arena_init(&A_dx, max_bytes);

  test_exhaustive16();
  test_fp32(n_fp32);
  test_offsets();
  test_tails();
  test_stochastic();
  test_bad_input();
  test_graph();

  arena_free(&A_x);
  arena_free(&A_y);
  arena_free(&A_y2);
  arena_free(&A_codes);
  arena_free(&A_codes2);
  arena_free(&A_dy);
  arena_free(&A_dx);
  printf("test_cuda: %ld passed, %ld failed\n", check_passed, check_failed);
  return check_failed ? 1 : 0;
}

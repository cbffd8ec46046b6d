/* CUDA RMSNorm against the CPU library, byte for byte (y, rstd, dx, dw):
 *  - fp16 / bf16: every one of the 65,536 bit patterns as an input element
 *    (rows of 64 patterns among typical values, and rows of 256 consecutive
 *    patterns: NaN rows, overflowing rows, subnormals);
 *  - fp32: random rows of assorted scales;
 *  - shapes: cols 1 .. 5000 (1, 2, 4 and 8 warps a block, several 256-lane
 *    trips), rows 1 .. 5000 (one to 512 dw chunks), each pointer aligned,
 *    element-offset or byte-offset (16-byte, element and byte paths); guard
 *    bytes around every output untouched;
 *  - y == x and dx == dy on the device; dw accumulates over two calls;
 *  - a call on a created stream captured in a CUDA graph and replayed;
 *  - bad input (host pointers, small or NULL workspace, overlap, unaligned
 *    fp32 arrays): the right status, no output byte written.
 * --quick: fewer shapes and no large calls (for compute-sanitizer).
 * Prints "test_rmsnorm_cuda: N passed, N failed"; exit status 1 on failure. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../c/check.h"
#include "cuda_ok.h"
#include "../c/test_data.h"
#include "unswag.h"

static const unswag_dtype DTYPES[] = {UNSWAG_F32, UNSWAG_F16, UNSWAG_BF16};
static const char *DT_NAMES[] = {"f32", "f16", "bf16"};
static const float EPS = 1e-6f;

/* roughly normal(0, scale): sum of 4 uniforms, centred */
static float rnd_value(double scale) {
  double s = 0;
  for (int k = 0; k < 4; ++k) s += (double)(rng() >> 11) * 0x1.0p-53;
  return (float)((s - 2.0) * 1.7320508 * scale);
}

static uint32_t to_bits(unswag_dtype dt, float f) {
  if (dt == UNSWAG_F32) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
  }
  return dt == UNSWAG_F16 ? unswag_f32_to_f16(f) : unswag_f32_to_bf16(f);
}

#define PAD 64

/* Device buffer with PAD guard bytes on each side (filled with 0xA5). */
typedef struct {
  unsigned char *base; /* device */
  size_t size;
} dbuf;

static dbuf dalloc(size_t bytes) {
  dbuf b;
  b.size = bytes + 2 * PAD;
  CUDA_OK(cudaMalloc((void **)&b.base, b.size));
  CUDA_OK(cudaMemset(b.base, 0xA5, b.size));
  return b;
}

/* Copies the device buffer back; 1 if the bytes outside [off, off + len) are still 0xA5. */
static int fetch(const dbuf *b, unsigned char *host, size_t off, size_t len) {
  unsigned char *all = malloc(b->size);
  CUDA_OK(cudaMemcpy(all, b->base, b->size, cudaMemcpyDeviceToHost));
  memcpy(host, all + off, len);
  int ok = 1;
  for (size_t i = 0; i < b->size; ++i)
    if ((i < off || i >= off + len) && all[i] != 0xA5) ok = 0;
  free(all);
  return ok;
}

/* One (rows, cols) case: x, w, dy given on the host; offsets in bytes of each
 * device pointer past PAD.  Compares every output to the CPU. */
static void run_case(const char *what, unswag_dtype dt, const void *x, const void *w,
                     const void *dy, size_t rows, size_t cols, const size_t off[5],
                     cudaStream_t st) {
  const size_t es = unswag_dtype_size(dt), bytes = rows * cols * es;
  /* CPU */
  void *y = malloc(bytes), *dx = malloc(bytes);
  float *rstd = malloc(rows * 4), *dw = malloc(cols * 4);
  for (size_t j = 0; j < cols; ++j) dw[j] = (float)j * 0.25f - 3.0f;
  unswag_status s = unswag_rmsnorm_forward(dt, x, w, y, rstd, rows, cols, EPS, 0.0f);
  s |= unswag_rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, rows, cols, 0.0f);
  CHECK(s == UNSWAG_OK, "%s: CPU status (%s)", what, unswag_last_error());

  /* GPU: off[0..4] = x, w, dy, y, dx */
  dbuf bx = dalloc(bytes + 16), bw = dalloc(cols * es + 16), bdy = dalloc(bytes + 16);
  dbuf by = dalloc(bytes + 16), bdx = dalloc(bytes + 16), brs = dalloc(rows * 4),
       bdw = dalloc(cols * 4);
  size_t wsb = 0;
  unswag_rmsnorm_workspace_bytes(rows, cols, &wsb);
  void *ws = NULL;
  CUDA_OK(cudaMalloc(&ws, wsb ? wsb : 4));
  float *dw0 = malloc(cols * 4);
  for (size_t j = 0; j < cols; ++j) dw0[j] = (float)j * 0.25f - 3.0f;
  CUDA_OK(cudaMemcpy(bx.base + PAD + off[0], x, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(bw.base + PAD + off[1], w, cols * es, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(bdy.base + PAD + off[2], dy, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(bdw.base + PAD, dw0, cols * 4, cudaMemcpyHostToDevice));
  float *d_rstd = (float *)(void *)(brs.base + PAD), *d_dw = (float *)(void *)(bdw.base + PAD);
  unswag_status s1 =
      unswag_rmsnorm_forward_cuda(dt, bx.base + PAD + off[0], bw.base + PAD + off[1],
                                  by.base + PAD + off[3], d_rstd, rows, cols, EPS, 0.0f, st);
  unswag_status s2 = unswag_rmsnorm_backward_cuda(
      dt, bdy.base + PAD + off[2], bx.base + PAD + off[0], bw.base + PAD + off[1], d_rstd,
      bdx.base + PAD + off[4], d_dw, ws, wsb, rows, cols, 0.0f, st);
  CHECK(s1 == UNSWAG_OK && s2 == UNSWAG_OK, "%s: CUDA status %d %d (%s)", what, s1, s2,
        unswag_last_error());
  CUDA_OK(cudaStreamSynchronize(st));
  void *gy = malloc(bytes), *gdx = malloc(bytes);
  float *grs = malloc(rows * 4), *gdw = malloc(cols * 4);
  int guards = fetch(&by, gy, PAD + off[3], bytes) & fetch(&bdx, gdx, PAD + off[4], bytes) &
               fetch(&brs, (unsigned char *)grs, PAD, rows * 4) &
               fetch(&bdw, (unsigned char *)gdw, PAD, cols * 4);
  CHECK(guards, "%s: a byte outside an output was written", what);
  CHECK(memcmp(grs, rstd, rows * 4) == 0, "%s: rstd differs from the CPU", what);
  CHECK(memcmp(gy, y, bytes) == 0, "%s: y differs from the CPU", what);
  CHECK(memcmp(gdx, dx, bytes) == 0, "%s: dx differs from the CPU", what);
  CHECK(memcmp(gdw, dw, cols * 4) == 0, "%s: dw differs from the CPU", what);

  /* in place on the device (aligned cases): y == x, dx == dy give the same bytes */
  if (off[0] == 0 && off[2] == 0) {
    void *d = NULL;
    CUDA_OK(cudaMalloc(&d, bytes));
    CUDA_OK(cudaMemcpy(d, x, bytes, cudaMemcpyHostToDevice));
    s1 = unswag_rmsnorm_forward_cuda(dt, d, bw.base + PAD + off[1], d, d_rstd, rows, cols, EPS,
                                     0.0f, st);
    CUDA_OK(cudaStreamSynchronize(st));
    CUDA_OK(cudaMemcpy(gy, d, bytes, cudaMemcpyDeviceToHost));
    CHECK(s1 == UNSWAG_OK && memcmp(gy, y, bytes) == 0, "%s: in-place forward differs", what);
    CUDA_OK(cudaMemcpy(d, dy, bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(d_dw, dw, cols * 4, cudaMemcpyHostToDevice)); /* accumulate a second time */
    s2 = unswag_rmsnorm_backward_cuda(dt, d, bx.base + PAD, bw.base + PAD + off[1], d_rstd, d, d_dw,
                                      ws, wsb, rows, cols, 0.0f, st);
    CUDA_OK(cudaStreamSynchronize(st));
    CUDA_OK(cudaMemcpy(gdx, d, bytes, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(gdw, d_dw, cols * 4, cudaMemcpyDeviceToHost));
    CHECK(s2 == UNSWAG_OK && memcmp(gdx, dx, bytes) == 0, "%s: in-place backward differs", what);
    unswag_rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, rows, cols, 0.0f); /* CPU, 2nd time */
    CHECK(memcmp(gdw, dw, cols * 4) == 0, "%s: accumulated dw differs", what);
    cudaFree(d);
  }
  cudaFree(bx.base), cudaFree(bw.base), cudaFree(bdy.base), cudaFree(by.base), cudaFree(bdx.base);
  cudaFree(brs.base), cudaFree(bdw.base), cudaFree(ws);
  free(y), free(dx), free(rstd), free(dw), free(dw0), free(gy), free(gdx), free(grs), free(gdw);
}

static void fill(unswag_dtype dt, void *buf, size_t n, double scale) {
  for (size_t i = 0; i < n; ++i) put_bits(dt, buf, i, to_bits(dt, rnd_value(scale)));
}

static const size_t ALIGNED[5] = {0, 0, 0, 0, 0};

static void check_exhaustive(unswag_dtype dt) {
  const size_t cols = 256, rows = 1024;
  void *x = malloc(rows * cols * 2), *w = malloc(cols * 2), *dy = malloc(rows * cols * 2);
  fill(dt, w, cols, 1.0);
  fill(dt, dy, rows * cols, 1.0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < cols; ++j)
      put_bits(dt, x, r * cols + j, j < 64 ? (uint32_t)(r * 64 + j) : to_bits(dt, rnd_value(1.0)));
  char what[96];
  snprintf(what, sizeof what, "sweep mixed %s", DT_NAMES[dt]);
  run_case(what, dt, x, w, dy, rows, cols, ALIGNED, NULL);
  for (size_t i = 0; i < 65536; ++i) put_bits(dt, x, i, (uint32_t)i);
  snprintf(what, sizeof what, "sweep pure %s", DT_NAMES[dt]);
  run_case(what, dt, x, w, dy, 256, 256, ALIGNED, NULL);
  free(x), free(w), free(dy);
}

/* quick: the first few shapes only (for compute-sanitizer) */
static void check_shapes(unswag_dtype dt, int quick) {
  static const size_t COLS[] = {1,   3,   7,   8,    9,    17,   64,   100,  255,  256,
                                257, 512, 513, 1000, 1024, 2047, 2048, 2056, 4096, 5000};
  static const size_t ROWS[] = {1, 3, 8, 9, 33, 300};
  const size_t es = unswag_dtype_size(dt);
  char what[128];
  const size_t ncols = quick ? 8 : sizeof COLS / sizeof *COLS;
  const size_t nrows = quick ? 4 : sizeof ROWS / sizeof *ROWS;
  for (size_t ci = 0; ci < ncols; ++ci) {
    for (size_t ri = 0; ri < nrows; ++ri) {
      const size_t cols = COLS[ci], rows = ROWS[ri], n = rows * cols;
      for (int mode = 0; mode < 3; ++mode) {
        /* 0: all aligned; 1: element offsets; 2: byte offsets */
        size_t off[5];
        for (int k = 0; k < 5; ++k)
          off[k] = mode == 0 ? 0 : mode == 1 ? es * (size_t)((k + ci) % 4) : (size_t)(k & 1);
        void *x = malloc(n * es), *w = malloc(cols * es), *dy = malloc(n * es);
        fill(dt, x, n, ldexp(1.0, (int)(rng() % 12) - 6));
        fill(dt, w, cols, 1.0);
        fill(dt, dy, n, 1.0);
        snprintf(what, sizeof what, "%s rows %zu cols %zu mode %d", DT_NAMES[dt], rows, cols, mode);
        run_case(what, dt, x, w, dy, rows, cols, off, NULL);
        free(x), free(w), free(dy);
      }
    }
  }
  if (quick) return;
  /* many rows: up to 512 dw chunks of several rows, on a created stream */
  cudaStream_t st;
  CUDA_OK(cudaStreamCreate(&st));
  static const size_t BIG[][2] = {{5000, 64}, {4099, 2048}, {20000, 128}};
  for (size_t b = 0; b < 3; ++b) {
    const size_t rows = BIG[b][0], cols = BIG[b][1], n = rows * cols;
    void *x = malloc(n * es), *w = malloc(cols * es), *dy = malloc(n * es);
    fill(dt, x, n, 2.0);
    fill(dt, w, cols, 1.0);
    fill(dt, dy, n, 1.0);
    snprintf(what, sizeof what, "%s rows %zu cols %zu on a stream", DT_NAMES[dt], rows, cols);
    run_case(what, dt, x, w, dy, rows, cols, ALIGNED, st);
    free(x), free(w), free(dy);
  }
  cudaStreamDestroy(st);
}

static void check_graph(void) {
  const unswag_dtype dt = UNSWAG_BF16;
  const size_t rows = 1000, cols = 2048, bytes = rows * cols * 2;
  void *x = malloc(bytes), *w = malloc(cols * 2), *y = malloc(bytes), *gy = malloc(bytes);
  float *rstd = malloc(rows * 4);
  fill(dt, x, rows * cols, 1.0);
  fill(dt, w, cols, 1.0);
  unswag_rmsnorm_forward(dt, x, w, y, rstd, rows, cols, EPS, 0.0f);
  void *d_x, *d_w, *d_y;
  float *d_r;
  CUDA_OK(cudaMalloc(&d_x, bytes));
  CUDA_OK(cudaMalloc(&d_w, cols * 2));
  CUDA_OK(cudaMalloc(&d_y, bytes));
  CUDA_OK(cudaMalloc((void **)&d_r, rows * 4));
  CUDA_OK(cudaMemcpy(d_x, x, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_w, w, cols * 2, cudaMemcpyHostToDevice));
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  unswag_status s0 = unswag_rmsnorm_forward_cuda(dt, d_x, d_w, d_y, d_r, 10, cols, EPS, 0.0f, st);
  CUDA_OK(cudaStreamSynchronize(st));
  CUDA_OK(cudaMemset(d_y, 0, bytes));
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  unswag_status s = unswag_rmsnorm_forward_cuda(dt, d_x, d_w, d_y, d_r, rows, cols, EPS, 0.0f, st);
  cudaError_t e = cudaStreamEndCapture(st, &graph);
  CHECK(s0 == UNSWAG_OK && s == UNSWAG_OK && e == cudaSuccess, "graph capture: %d %d %s (%s)", s0,
        s, cudaGetErrorString(e), unswag_last_error());
  if (s == UNSWAG_OK && e == cudaSuccess) {
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_OK(cudaGraphLaunch(exec, st));
    CUDA_OK(cudaStreamSynchronize(st));
    CUDA_OK(cudaMemcpy(gy, d_y, bytes, cudaMemcpyDeviceToHost));
    CHECK(memcmp(gy, y, bytes) == 0, "graph replay differs from the CPU");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  (void)cudaGetLastError();
  cudaStreamDestroy(st);
  cudaFree(d_x), cudaFree(d_w), cudaFree(d_y), cudaFree(d_r);
  free(x), free(w), free(y), free(gy), free(rstd);
}

static void check_bad_input(void) {
  const unswag_dtype B = UNSWAG_BF16;
  unsigned char *d;
  CUDA_OK(cudaMalloc((void **)&d, 8 * 256));
  CUDA_OK(cudaMemset(d, 0xA5, 8 * 256));
  unsigned char *x = d, *w = d + 256, *dy = d + 512, *y = d + 768, *dx = d + 1024;
  float *rstd = (float *)(void *)(d + 1280), *dw = (float *)(void *)(d + 1536);
  unsigned char *ws = d + 1792;
  _Alignas(16) unsigned char host[256];
  memset(host, 0xA5, sizeof host);
  size_t need = 0;
  unswag_rmsnorm_workspace_bytes(4, 8, &need); /* 32 bytes */
  unswag_status s;
  s = unswag_rmsnorm_forward_cuda(B, host, w, y, rstd, 4, 8, EPS, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host x: %d", s);
  s = unswag_rmsnorm_forward_cuda(B, x, w, host, rstd, 4, 8, EPS, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host y: %d", s);
  s = unswag_rmsnorm_forward_cuda(B, x, w, y, (float *)(void *)host, 4, 8, EPS, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host rstd: %d", s);
  s = unswag_rmsnorm_backward_cuda(B, dy, x, w, rstd, dx, (float *)(void *)host, ws, need, 4, 8, 0,
                                   NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host dw: %d", s);
  s = unswag_rmsnorm_backward_cuda(B, dy, x, w, rstd, dx, dw, host, need, 4, 8, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host workspace: %d", s);
  s = unswag_rmsnorm_backward_cuda(B, dy, x, w, rstd, dx, dw, ws, need - 4, 4, 8, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_PARAM, "small workspace: %d", s);
  s = unswag_rmsnorm_backward_cuda(B, dy, x, w, rstd, dx, dw, NULL, need, 4, 8, 0, NULL);
  CHECK(s == UNSWAG_ERR_NULL_POINTER, "NULL workspace: %d", s);
  s = unswag_rmsnorm_backward_cuda(B, dy, x, w, rstd, dx, dw, dx, need, 4, 8, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_PARAM, "workspace == dx: %d", s);
  s = unswag_rmsnorm_backward_cuda(B, dy, x, w, rstd, dx, (float *)(void *)(d + 1537), ws, need, 4,
                                   8, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "unaligned dw: %d", s);
  s = unswag_rmsnorm_forward_cuda(B, x, w, x + 2, rstd, 4, 8, EPS, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_PARAM, "y overlaps x: %d", s);
  s = unswag_rmsnorm_forward_cuda(B, x, w, y, rstd, 4, 8, NAN, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_PARAM, "eps NaN: %d", s);
  s = unswag_rmsnorm_forward_cuda(B, x, w, y, rstd, 4, 8, EPS, 1.0f, NULL);
  CHECK(s == UNSWAG_ERR_BAD_PARAM, "weight_offset 1: %d", s);
  s = unswag_rmsnorm_forward_cuda((unswag_dtype)7, x, w, y, rstd, 4, 8, EPS, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_DTYPE, "dtype 7: %d", s);
  s = unswag_rmsnorm_forward_cuda(B, x, w, y, rstd, 4, 0, EPS, 0, NULL);
  CHECK(s == UNSWAG_ERR_BAD_PARAM, "cols 0: %d", s);
  s = unswag_rmsnorm_backward_cuda(B, dy, NULL, w, rstd, dx, dw, ws, need, 4, 8, 0, NULL);
  CHECK(s == UNSWAG_ERR_NULL_POINTER, "NULL x: %d", s);
  s = unswag_rmsnorm_forward_cuda(B, NULL, NULL, NULL, NULL, 0, 8, EPS, 0, NULL);
  CHECK(s == UNSWAG_OK, "rows 0: %d", s);
  CUDA_OK(cudaDeviceSynchronize());
  unsigned char back[8 * 256];
  CUDA_OK(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost));
  int untouched = 1;
  for (size_t i = 0; i < sizeof back; ++i) untouched &= back[i] == 0xA5;
  for (size_t i = 0; i < sizeof host; ++i) untouched &= host[i] == 0xA5;
  CHECK(untouched, "an output byte was written on error");
  cudaFree(d);
}

int main(int argc, char **argv) {
  rng_seed(0xDA942042E4DD58B5ull);
  int count = 0;
  const int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  if (!unswag_cuda_built() || cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    printf("test_rmsnorm_cuda: no CUDA build or device\n");
    return 1;
  }
  check_bad_input();
  check_exhaustive(UNSWAG_F16);
  check_exhaustive(UNSWAG_BF16);
  {
    const size_t rows = 600, cols = 1000;
    float *x = malloc(rows * cols * 4), *w = malloc(cols * 4), *dy = malloc(rows * cols * 4);
    for (size_t r = 0; r < rows; ++r) {
      const double scale = ldexp(1.0, (int)(rng() % 200) - 100);
      for (size_t j = 0; j < cols; ++j) x[r * cols + j] = rnd_value(scale);
    }
    x[5] = NAN;
    x[cols + 3] = INFINITY;
    fill(UNSWAG_F32, w, cols, 1.0);
    fill(UNSWAG_F32, dy, rows * cols, 1.0);
    run_case("random f32", UNSWAG_F32, x, w, dy, rows, cols, ALIGNED, NULL);
    free(x), free(w), free(dy);
  }
  for (int d = 0; d < 3; ++d) check_shapes(DTYPES[d], quick);
  check_graph();
  CHECK_SUMMARY("test_rmsnorm_cuda");
}

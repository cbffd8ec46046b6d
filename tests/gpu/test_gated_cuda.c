/* CUDA gated MLP kernels against the CPU library:
 *  - fp16 / bf16: all 65,536 g bit patterns, random u and dh bit patterns
 *    (NaN, Inf, subnormals included): the same bytes as the CPU;
 *  - fp32: 10^6 random values plus specials: within 1 ulp of the CPU (CUDA's
 *    double exp/erfc instead of libm's), NaN bytes equal;
 *  - in place (dg == g, du == u) on the device gives the same bytes;
 *  - every n from 0 to 300, each pointer at its own offset (element offsets
 *    0..3 and an odd byte address): 16-byte vector, element and byte paths,
 *    guard bytes untouched;
 *  - a large call (grid-stride loops) on a created stream, and the same
 *    call captured in a CUDA graph and replayed;
 *  - bad input (host pointers, NULL, unknown activation / dtype, size
 *    overflow): the right status and no output byte written.
 * Prints "test_gated_cuda: N passed, N failed"; exit status 1 on failure. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../c/check.h"
#include "cuda_ok.h"
#include "../c/test_data.h"
#include "unswag.h"

static const unswag_activation ACTS[] = {UNSWAG_SILU, UNSWAG_GELU, UNSWAG_GELU_TANH};
static const unswag_dtype DTYPES[] = {UNSWAG_F32, UNSWAG_F16, UNSWAG_BF16};
static const char *DT_NAMES[] = {"f32", "f16", "bf16"};

static uint32_t get_bits(unswag_dtype dt, const void *buf, size_t i) {
  if (dt == UNSWAG_F32) {
    uint32_t u;
    memcpy(&u, (const char *)buf + 4 * i, 4);
    return u;
  }
  uint16_t h;
  memcpy(&h, (const char *)buf + 2 * i, 2);
  return h;
}

/* A random element: any bit pattern or a value of typical size. */
static uint32_t random_elem(unswag_dtype dt) {
  uint64_t r = rng();
  float f = (float)((int64_t)(r >> 40) - (1 << 23)) * (1.0f / (1 << 20)); /* [-8, 8) */
  if (r & 1) {
    if (dt == UNSWAG_F32) return (uint32_t)(r >> 32);
    return (uint32_t)(r >> 48);
  }
  if (dt == UNSWAG_F32) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
  }
  return dt == UNSWAG_F16 ? unswag_f32_to_f16(f) : unswag_f32_to_bf16(f);
}

/* fp32 bits a, b within 1 ulp (the same bytes for NaN and zeros of one sign
 * are not required: +0 == -0). */
static int f32_close(uint32_t a, uint32_t b) {
  int an = (a & 0x7FFFFFFFu) > 0x7F800000u, bn = (b & 0x7FFFFFFFu) > 0x7F800000u;
  if (an || bn) return a == b;
  int64_t ia = (a & 0x80000000u) ? -(int64_t)(a & 0x7FFFFFFFu) : (int64_t)(a & 0x7FFFFFFFu);
  int64_t ib = (b & 0x80000000u) ? -(int64_t)(b & 0x7FFFFFFFu) : (int64_t)(b & 0x7FFFFFFFu);
  return (ia > ib ? ia - ib : ib - ia) <= 1;
}

/* Number of elements of got that differ from want (bitwise for 16-bit,
 * beyond 1 ulp for fp32). */
static long count_diff(unswag_dtype dt, const void *got, const void *want, size_t n,
                       size_t *first) {
  long bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t a = get_bits(dt, got, i), b = get_bits(dt, want, i);
    int ok = dt == UNSWAG_F32 ? f32_close(a, b) : a == b;
    if (!ok && !bad++ && first) *first = i;
  }
  return bad;
}

/* ---- whole-buffer comparisons ------------------------------------------------------------ */

static void check_values(unswag_activation act, unswag_dtype dt, const void *g, size_t n,
                         cudaStream_t stream, const char *what) {
  const size_t es = unswag_dtype_size(dt), bytes = n * es;
  void *u = malloc(bytes), *dh = malloc(bytes);
  void *h[2], *dg[2], *du[2]; /* [0] CPU, [1] GPU */
  for (int k = 0; k < 2; ++k) h[k] = malloc(bytes), dg[k] = malloc(bytes), du[k] = malloc(bytes);
  for (size_t i = 0; i < n; ++i) {
    put_bits(dt, u, i, random_elem(dt));
    put_bits(dt, dh, i, random_elem(dt));
  }
  unswag_status s = unswag_gated_forward(act, dt, g, u, h[0], n);
  s |= unswag_gated_backward(act, dt, dh, g, u, dg[0], du[0], n);
  CHECK(s == UNSWAG_OK, "%s: CPU status", what);

  void *d_g, *d_u, *d_dh, *d_h, *d_dg, *d_du;
  CUDA_OK(cudaMalloc(&d_g, bytes));
  CUDA_OK(cudaMalloc(&d_u, bytes));
  CUDA_OK(cudaMalloc(&d_dh, bytes));
  CUDA_OK(cudaMalloc(&d_h, bytes));
  CUDA_OK(cudaMalloc(&d_dg, bytes));
  CUDA_OK(cudaMalloc(&d_du, bytes));
  CUDA_OK(cudaMemcpy(d_g, g, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_u, u, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_dh, dh, bytes, cudaMemcpyHostToDevice));
  s = unswag_gated_forward_cuda(act, dt, d_g, d_u, d_h, n, stream);
  unswag_status s2 = unswag_gated_backward_cuda(act, dt, d_dh, d_g, d_u, d_dg, d_du, n, stream);
  CHECK(s == UNSWAG_OK && s2 == UNSWAG_OK, "%s: CUDA status %d %d (%s)", what, s, s2,
        unswag_last_error());
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaMemcpy(h[1], d_h, bytes, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(dg[1], d_dg, bytes, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(du[1], d_du, bytes, cudaMemcpyDeviceToHost));
  size_t first = 0;
  long bh = count_diff(dt, h[1], h[0], n, &first);
  CHECK(bh == 0, "%s: %ld h differ from the CPU (first at %zu: g %x u %x: %x vs %x)", what, bh,
        first, get_bits(dt, g, first), get_bits(dt, u, first), get_bits(dt, h[1], first),
        get_bits(dt, h[0], first));
  long bg = count_diff(dt, dg[1], dg[0], n, &first);
  CHECK(bg == 0, "%s: %ld dg differ from the CPU (first at %zu: g %x: %x vs %x)", what, bg, first,
        get_bits(dt, g, first), get_bits(dt, dg[1], first), get_bits(dt, dg[0], first));
  long bu = count_diff(dt, du[1], du[0], n, &first);
  CHECK(bu == 0, "%s: %ld du differ from the CPU (first at %zu: g %x: %x vs %x)", what, bu, first,
        get_bits(dt, g, first), get_bits(dt, du[1], first), get_bits(dt, du[0], first));

  /* in place on the device: dg == g, du == u give the GPU's own bytes */
  s = unswag_gated_backward_cuda(act, dt, d_dh, d_g, d_u, d_g, d_u, n, stream);
  CUDA_OK(cudaStreamSynchronize(stream));
  void *ig = malloc(bytes), *iu = malloc(bytes);
  CUDA_OK(cudaMemcpy(ig, d_g, bytes, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(iu, d_u, bytes, cudaMemcpyDeviceToHost));
  CHECK(s == UNSWAG_OK && memcmp(ig, dg[1], bytes) == 0 && memcmp(iu, du[1], bytes) == 0,
        "%s: in-place backward differs", what);
  free(ig), free(iu);

  cudaFree(d_g), cudaFree(d_u), cudaFree(d_dh), cudaFree(d_h), cudaFree(d_dg), cudaFree(d_du);
  free(u), free(dh);
  for (int k = 0; k < 2; ++k) free(h[k]), free(dg[k]), free(du[k]);
}

/* ---- tails, offsets, guards ---------------------------------------------------------------- */

#define TAIL_N 300
#define PAD 64
#define BUF ((TAIL_N + 8) * 4 + 2 * PAD)

static size_t byte_offset(int k, size_t es) { return k < 4 ? (size_t)k * es : 1; }

static int guards_ok(const unsigned char *buf, size_t off, size_t len) {
  for (size_t i = 0; i < BUF; ++i)
    if ((i < off || i >= off + len) && buf[i] != 0xA5) return 0;
  return 1;
}

static void check_tails(unswag_activation act, unswag_dtype dt) {
  const size_t es = unswag_dtype_size(dt);
  unsigned char in[3][BUF], out[3][BUF], want[3][BUF];
  for (int b = 0; b < 3; ++b)
    for (size_t i = 0; i < BUF / es; ++i) put_bits(dt, in[b], i, random_elem(dt));
  unsigned char *d_in, *d_out;
  CUDA_OK(cudaMalloc((void **)&d_in, 3 * BUF));
  CUDA_OK(cudaMalloc((void **)&d_out, 3 * BUF));
  CUDA_OK(cudaMemcpy(d_in, in, 3 * BUF, cudaMemcpyHostToDevice));
  long bad = 0;
  for (size_t n = 0; n <= TAIL_N; ++n) {
    for (int off = 0; off < 5; ++off) {
      const size_t og = byte_offset(off, es), ou = byte_offset((off + 1) % 5, es),
                   odh = byte_offset((off + 2) % 5, es);
      const size_t oh = PAD + byte_offset((off + 3) % 5, es),
                   odg = PAD + byte_offset((off + 4) % 5, es), odu = PAD + byte_offset(off, es);
      /* CPU */
      unswag_gated_forward(act, dt, in[0] + og, in[1] + ou, want[0], n);
      unswag_gated_backward(act, dt, in[2] + odh, in[0] + og, in[1] + ou, want[1], want[2], n);
      /* GPU */
      CUDA_OK(cudaMemset(d_out, 0xA5, 3 * BUF));
      unswag_status s1 =
          unswag_gated_forward_cuda(act, dt, d_in + og, d_in + BUF + ou, d_out + oh, n, NULL);
      unswag_status s2 =
          unswag_gated_backward_cuda(act, dt, d_in + 2 * BUF + odh, d_in + og, d_in + BUF + ou,
                                     d_out + BUF + odg, d_out + 2 * BUF + odu, n, NULL);
      CUDA_OK(cudaMemcpy(out, d_out, 3 * BUF, cudaMemcpyDeviceToHost));
      int ok = s1 == UNSWAG_OK && s2 == UNSWAG_OK &&
               count_diff(dt, out[0] + oh, want[0], n, NULL) == 0 &&
               count_diff(dt, out[1] + odg, want[1], n, NULL) == 0 &&
               count_diff(dt, out[2] + odu, want[2], n, NULL) == 0 &&
               guards_ok(out[0], oh, n * es) && guards_ok(out[1], odg, n * es) &&
               guards_ok(out[2], odu, n * es);
      if (!ok && !bad++)
        fprintf(stderr, "  tails: %s %s n=%zu off=%d status %d %d\n", unswag_activation_name(act),
                DT_NAMES[dt], n, off, s1, s2);
    }
  }
  CHECK(bad == 0, "tails: %s %s: %ld (n, offset) cases wrong", unswag_activation_name(act),
        DT_NAMES[dt], bad);
  cudaFree(d_in), cudaFree(d_out);
}

/* ---- CUDA graph capture ------------------------------------------------------------------ */

static void check_graph(void) {
  const size_t n = 1 << 20, bytes = n * 2;
  const unswag_dtype dt = UNSWAG_BF16;
  void *g = malloc(bytes), *u = malloc(bytes), *h = malloc(bytes), *hw = malloc(bytes);
  for (size_t i = 0; i < n; ++i) {
    put_bits(dt, g, i, random_elem(dt));
    put_bits(dt, u, i, random_elem(dt));
  }
  unswag_gated_forward(UNSWAG_SILU, dt, g, u, hw, n);
  void *d_g, *d_u, *d_h;
  CUDA_OK(cudaMalloc(&d_g, bytes));
  CUDA_OK(cudaMalloc(&d_u, bytes));
  CUDA_OK(cudaMalloc(&d_h, bytes));
  CUDA_OK(cudaMemcpy(d_g, g, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_u, u, bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(d_h, 0, bytes));
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  /* a first call outside the capture fills the launch-geometry cache */
  unswag_status s0 = unswag_gated_forward_cuda(UNSWAG_SILU, dt, d_g, d_u, d_h, 1000, st);
  CUDA_OK(cudaStreamSynchronize(st));
  CUDA_OK(cudaMemset(d_h, 0, bytes));
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  unswag_status s = unswag_gated_forward_cuda(UNSWAG_SILU, dt, d_g, d_u, d_h, n, st);
  cudaError_t e = cudaStreamEndCapture(st, &graph);
  CHECK(s0 == UNSWAG_OK && s == UNSWAG_OK && e == cudaSuccess,
        "graph capture: status %d %d, %s (%s)", s0, s, cudaGetErrorString(e), unswag_last_error());
  if (s == UNSWAG_OK && e == cudaSuccess) {
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_OK(cudaGraphLaunch(exec, st));
    CUDA_OK(cudaStreamSynchronize(st));
    CUDA_OK(cudaMemcpy(h, d_h, bytes, cudaMemcpyDeviceToHost));
    CHECK(memcmp(h, hw, bytes) == 0, "graph replay differs from the CPU");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  (void)cudaGetLastError();
  cudaStreamDestroy(st);
  cudaFree(d_g), cudaFree(d_u), cudaFree(d_h);
  free(g), free(u), free(h), free(hw);
}

/* ---- bad input ----------------------------------------------------------------------------- */

static void check_bad_input(void) {
  unsigned char *d;
  CUDA_OK(cudaMalloc((void **)&d, 6 * 64));
  CUDA_OK(cudaMemset(d, 0xA5, 6 * 64));
  unsigned char host_in[64] = {0}, host_out[64];
  memset(host_out, 0xA5, sizeof host_out);
  unsigned char *g = d, *u = d + 64, *dh = d + 128, *h = d + 192, *dg = d + 256, *du = d + 320;
  unswag_status s;
  /* host memory in every position */
  s = unswag_gated_forward_cuda(UNSWAG_SILU, UNSWAG_F16, host_in, u, h, 8, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host g: status %d", s);
  s = unswag_gated_forward_cuda(UNSWAG_SILU, UNSWAG_F16, g, u, host_out, 8, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host h: status %d", s);
  s = unswag_gated_backward_cuda(UNSWAG_GELU, UNSWAG_BF16, dh, g, host_in, dg, du, 8, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host u: status %d", s);
  s = unswag_gated_backward_cuda(UNSWAG_GELU, UNSWAG_BF16, dh, g, u, dg, host_out, 8, NULL);
  CHECK(s == UNSWAG_ERR_BAD_POINTER, "host du: status %d", s);
  /* NULL, activation, dtype, size */
  s = unswag_gated_forward_cuda(UNSWAG_SILU, UNSWAG_F32, g, NULL, h, 8, NULL);
  CHECK(s == UNSWAG_ERR_NULL_POINTER, "NULL u: status %d", s);
  s = unswag_gated_backward_cuda(UNSWAG_SILU, UNSWAG_F32, NULL, g, u, dg, du, 8, NULL);
  CHECK(s == UNSWAG_ERR_NULL_POINTER, "NULL dh: status %d", s);
  s = unswag_gated_forward_cuda(UNSWAG_RELU, UNSWAG_F16, g, u, h, 8, NULL);
  CHECK(s == UNSWAG_ERR_BAD_ACTIVATION, "relu: status %d", s);
  s = unswag_gated_backward_cuda((unswag_activation)99, UNSWAG_F16, dh, g, u, dg, du, 8, NULL);
  CHECK(s == UNSWAG_ERR_BAD_ACTIVATION, "activation 99: status %d", s);
  s = unswag_gated_forward_cuda(UNSWAG_GELU, (unswag_dtype)5, g, u, h, 8, NULL);
  CHECK(s == UNSWAG_ERR_BAD_DTYPE, "dtype 5: status %d", s);
  s = unswag_gated_backward_cuda(UNSWAG_GELU, UNSWAG_F16, dh, g, u, dg, du, SIZE_MAX / 2, NULL);
  CHECK(s == UNSWAG_ERR_SIZE_OVERFLOW, "size overflow: status %d", s);
  /* n = 0: OK, nothing written, NULL allowed */
  s = unswag_gated_forward_cuda(UNSWAG_GELU, UNSWAG_F16, NULL, NULL, NULL, 0, NULL);
  CHECK(s == UNSWAG_OK, "n = 0: status %d", s);
  CUDA_OK(cudaDeviceSynchronize());
  unsigned char back[6 * 64];
  CUDA_OK(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost));
  int untouched = 1;
  for (size_t i = 192; i < sizeof back; ++i) untouched &= back[i] == 0xA5;
  for (size_t i = 0; i < sizeof host_out; ++i) untouched &= host_out[i] == 0xA5;
  CHECK(untouched, "an output byte was written on error");
  cudaFree(d);
}

int main(void) {
  rng_seed(0x9E3779B97F4A7C15ull);
  int count = 0;
  if (!unswag_cuda_built() || cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    printf("test_gated_cuda: no CUDA build or device\n");
    return 1;
  }
  char what[96];
  for (int d = 0; d < 3; ++d) {
    const unswag_dtype dt = DTYPES[d];
    const size_t n = dt == UNSWAG_F32 ? 1000000 + 16 : 65536;
    void *g = malloc(n * unswag_dtype_size(dt));
    for (size_t i = 0; i < n; ++i)
      put_bits(dt, g, i, dt == UNSWAG_F32 ? random_elem(dt) : (uint32_t)i);
    if (dt == UNSWAG_F32) {
      static const uint32_t specials[16] = {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u,
                                            0x7FC00000u, 0xFFC00001u, 0x00000001u, 0x80800000u,
                                            0x7F7FFFFFu, 0xFF7FFFFFu, 0xBFA3A29Cu, 0xBF40748Fu,
                                            0xC2C80000u, 0xC3480000u, 0x41800000u, 0xC1800000u};
      memcpy((uint32_t *)g + 1000000, specials, sizeof specials);
    }
    for (int k = 0; k < 3; ++k) {
      snprintf(what, sizeof what, "%s %s", unswag_activation_name(ACTS[k]), DT_NAMES[d]);
      check_values(ACTS[k], dt, g, n, NULL, what);
      check_tails(ACTS[k], dt);
    }
    free(g);
  }
  /* a large call on a created stream: grid-stride loops, every activation */
  {
    cudaStream_t st;
    CUDA_OK(cudaStreamCreate(&st));
    const size_t n = ((size_t)1 << 24) + 3;
    void *g = malloc(n * 2);
    for (size_t i = 0; i < n; ++i) put_bits(UNSWAG_BF16, g, i, random_elem(UNSWAG_BF16));
    for (int k = 0; k < 3; ++k) {
      snprintf(what, sizeof what, "%s bf16 n=2^24+3 on a stream", unswag_activation_name(ACTS[k]));
      check_values(ACTS[k], UNSWAG_BF16, g, n, st, what);
    }
    free(g);
    cudaStreamDestroy(st);
  }
  check_graph();
  check_bad_input();
  CHECK_SUMMARY("test_gated_cuda");
}

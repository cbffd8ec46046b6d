/*
 * bench_cuda - time the CUDA forward and backward kernels against a
 * device-to-device copy of the same size (the memory-bandwidth limit).
 *
 *   bench_cuda [--n ELEMENTS] [--reps R] [--csv FILE] [--dtype bf16|f16|f32]
 *
 * Default n = 256M bf16 elements (512 MB a tensor).  Each call is timed with
 * CUDA events; the median of R >= 20 timed calls, taken in 5 round-robin
 * rounds over the copy and all kernels (one untimed warm-up call per round).
 * Bytes moved (e = element size): forward reads e*n and writes e*n + n*k/8;
 * backward reads e*n + n*k/8 and writes e*n; the copy reads and writes e*n.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vector>

#include "../../tests/gpu/cuda_ok.h"
#include "unswag.h"

#define UNSWAG_OK_OR_DIE(call)                                             \
  do {                                                                     \
    unswag_status s_ = (call);                                             \
    if (s_ != UNSWAG_OK) {                                                 \
      fprintf(stderr, "%s:%d: %s -> %s (%s)\n", __FILE__, __LINE__, #call, \
              unswag_status_string(s_), unswag_last_error());              \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

// normals from a counter hash (Box-Muller), scaled by `scale`, in dtype
__global__ void fill_normal(void *p, size_t n, int dtype, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    uint64_t z = seed + i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = ((uint32_t)z >> 8) * (1.0f / 16777216.0f) + (0.5f / 16777216.0f);
    const float v = (uint32_t)(z >> 40) * (1.0f / 16777216.0f);
    const float r = sqrtf(-2.0f * logf(u)) * cospif(2.0f * v) * scale;
    const uint32_t b = __float_as_uint(r);
    if (dtype == UNSWAG_F32) static_cast<float *>(p)[i] = r;
    else if (dtype == UNSWAG_F16) static_cast<__half *>(p)[i] = __float2half_rn(r);
    else static_cast<uint16_t *>(p)[i] = (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
  }
}

// Event timing of single calls on one stream.
struct Timer {
  cudaStream_t st;
  cudaEvent_t a, b;
  explicit Timer(cudaStream_t s) : st(s) {
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // one untimed warm-up call, then `count` timed calls appended to `t`
  template <typename F>
  void run(int count, std::vector<float> &t, F &&call) {
    call();
    for (int i = 0; i < count; ++i) {
      CUDA_OK(cudaEventRecord(a, st));
      call();
      CUDA_OK(cudaEventRecord(b, st));
      CUDA_OK(cudaEventSynchronize(b));
      float ms = 0;
      CUDA_OK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms);
    }
  }
};

static double median(std::vector<float> t) {
  std::sort(t.begin(), t.end());
  const size_t m = t.size() / 2;
  return t.size() % 2 ? t[m] : 0.5 * (t[m - 1] + t[m]);
}

int main(int argc, char **argv) {
  size_t n = (size_t)256 << 20;
  int reps = 30;
  const char *csv = nullptr;
  unswag_dtype dtype = UNSWAG_BF16;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--n") && i + 1 < argc) n = strtoull(argv[++i], nullptr, 10);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
    else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
      ++i;
      dtype = !strcmp(argv[i], "f32")   ? UNSWAG_F32
              : !strcmp(argv[i], "f16") ? UNSWAG_F16
                                        : UNSWAG_BF16;
    } else {
      fprintf(stderr, "usage: %s [--n ELEMENTS] [--reps R] [--csv FILE] [--dtype bf16|f16|f32]\n",
              argv[0]);
      return 2;
    }
  }
  if (reps < 20) reps = 20;
  const int rounds = 5, per_round = (reps + rounds - 1) / rounds;

  int dev = 0;
  CUDA_OK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, dev));
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  char date[64];
  const time_t now = time(nullptr);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
  printf("# bench_cuda: UnSwag CUDA kernels vs device copy\n");
  printf("# device: %s (sm_%d%d, %d SMs, %.1f GiB)\n", prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0);
  printf("# date: %s   CUDA runtime %d, driver %d   libunswag %s\n", date, rt, drv,
         unswag_version_string());
  const size_t es = unswag_dtype_size(dtype);
  const char *dname = dtype == UNSWAG_F32 ? "fp32" : dtype == UNSWAG_F16 ? "fp16" : "bf16";
  printf("# n = %zu %s elements (%.0f MB a tensor), median of %d timed calls\n", n, dname,
         (double)es * n / 1e6, rounds * per_round);

  void *x, *y, *dy, *dx;
  uint8_t *codes;
  CUDA_OK(cudaMalloc(&x, es * n));
  CUDA_OK(cudaMalloc(&y, es * n));
  CUDA_OK(cudaMalloc(&dy, es * n));
  CUDA_OK(cudaMalloc(&dx, es * n));
  CUDA_OK(cudaMalloc(&codes, n));  // enough for k = 8
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  fill_normal<<<1024, 256, 0, st>>>(x, n, dtype, 1, 1.0f);
  fill_normal<<<1024, 256, 0, st>>>(dy, n, dtype, 2, 0.01f);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaStreamSynchronize(st));

  struct Case {
    unswag_activation act;
    int bits;
    std::vector<float> fwd, bwd;
  };
  std::vector<Case> cases = {{UNSWAG_RELU, 1, {}, {}}, {UNSWAG_SILU, 1, {}, {}},
                             {UNSWAG_SILU, 2, {}, {}}, {UNSWAG_SILU, 4, {}, {}},
                             {UNSWAG_SILU, 8, {}, {}}, {UNSWAG_GELU, 1, {}, {}},
                             {UNSWAG_GELU, 2, {}, {}}, {UNSWAG_GELU, 4, {}, {}},
                             {UNSWAG_GELU, 8, {}, {}}, {UNSWAG_GELU_TANH, 2, {}, {}}};

  // Round robin: every round times the copy and each kernel a few times, so
  // slow drifts of the machine spread over all of them alike.
  Timer timer(st);
  std::vector<float> copy_t;
  for (int r = 0; r < rounds; ++r) {
    timer.run(per_round, copy_t,
              [&] { CUDA_OK(cudaMemcpyAsync(y, x, es * n, cudaMemcpyDeviceToDevice, st)); });
    for (Case &c : cases) {
      const unswag_op op = unswag_op_make(c.act, c.bits);
      timer.run(per_round, c.fwd,
                [&] { UNSWAG_OK_OR_DIE(unswag_forward_cuda(&op, dtype, x, y, codes, n, st)); });
      timer.run(per_round, c.bwd,
                [&] { UNSWAG_OK_OR_DIE(unswag_backward_cuda(&op, dtype, dy, codes, dx, n, st)); });
    }
  }
  const double copy_ms = median(copy_t);
  const double copy_gbs = 2.0 * es * n / (copy_ms * 1e6);
  printf("\ndevice copy of %.0f MB: %.3f ms, %.0f GB/s (read + write)\n\n", (double)es * n / 1e6,
         copy_ms, copy_gbs);

  FILE *f = csv ? fopen(csv, "w") : nullptr;
  if (csv && !f) {
    fprintf(stderr, "cannot write %s\n", csv);
    return 1;
  }
  if (f) fprintf(f, "act,k,fwd_ms,bwd_ms,fwd_gbs,bwd_gbs,copy_gbs\n");
  printf("%-10s %2s | %9s %8s %6s | %9s %8s %6s\n", "activation", "k", "fwd ms", "GB/s", "/copy",
         "bwd ms", "GB/s", "/copy");
  printf("--------------+---------------------------+--------------------------\n");
  for (const Case &c : cases) {
    const double code_b = (double)n * c.bits / 8.0;
    const double fwd_ms = median(c.fwd), bwd_ms = median(c.bwd);
    const double fwd_gbs = (2.0 * es * n + code_b) / (fwd_ms * 1e6);
    const double bwd_gbs = (2.0 * es * n + code_b) / (bwd_ms * 1e6);
    const char *name = unswag_activation_name(c.act);
    printf("%-10s %2d | %9.3f %8.0f %5.0f%% | %9.3f %8.0f %5.0f%%\n", name, c.bits, fwd_ms, fwd_gbs,
           100.0 * fwd_gbs / copy_gbs, bwd_ms, bwd_gbs, 100.0 * bwd_gbs / copy_gbs);
    if (f)
      fprintf(f, "%s,%d,%.5f,%.5f,%.1f,%.1f,%.1f\n", name, c.bits, fwd_ms, bwd_ms, fwd_gbs, bwd_gbs,
              copy_gbs);
  }
  if (f) fclose(f);
  CUDA_OK(cudaStreamDestroy(st));
  cudaFree(x);
  cudaFree(y);
  cudaFree(dy);
  cudaFree(dx);
  cudaFree(codes);
  return 0;
}

/*
 * stochastic.cu - the CUDA forward of stochastic codes (unswag.h,
 * UNSWAG_CODES_STOCHASTIC): the code of each element is stochastic_math.h's,
 * the same code the CPU runs (built with --fmad=false), and y is act_math.h's
 * value as in kernels.cu, so both are the CPU's bytes (fp32 y: within 1 ulp,
 * CUDA double math).
 *
 * One thread a group of 8 elements (whole code bytes), grid-stride; the last
 * partial group in the same loop.  Elements are loaded byte by byte when a
 * data pointer is not element-aligned, codes are stored byte by byte.  The
 * levels travel by value and are copied to shared memory at block start.
 * A plain first version: no 16-byte loads and no table (see kernels.cu).
 */
#include <cuda_runtime.h>

#include <atomic>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../core/stochastic_math.h"
#include "common.cuh"
#include "element_math.cuh"
#include "stochastic.cuh"

namespace unswag_cuda {
namespace {

constexpr int kThreads = 256;

struct StochArgs {
  uint64_t seed;
  int bits;
  bool bytewise;
  float levels[UNSWAG_MAX_LEVELS];
};

template <int ACT, int DT>
__global__ void __launch_bounds__(kThreads)
    stochastic_forward_kernel(const uint8_t *x, uint8_t *y, uint8_t *codes, size_t n, StochArgs a) {
  constexpr int ES = elem_size(DT);
  __shared__ float lv[UNSWAG_MAX_LEVELS];
  for (int t = threadIdx.x; t < (1 << a.bits); t += blockDim.x) lv[t] = a.levels[t];
  __syncthreads();

  const size_t groups = (n + 7) / 8;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
    const size_t base = g * 8;
    const int m = n - base < 8 ? (int)(n - base) : 8;
    uint64_t packed = 0;
    for (int k = 0; k < m; ++k) {
      const uint32_t in = load_elem<ES>(x, base + k, a.bytewise);
      const float v = to_float<DT>(in);
      const uint32_t c = us_stoch_code(ACT, v, lv, a.bits, a.seed, base + k);
      store_elem<ES>(y, base + k, smooth_value<ACT, DT>(v), a.bytewise);
      packed |= (uint64_t)c << (k * a.bits);
    }
    const int nbytes = (m * a.bits + 7) / 8;  // unused high bits stay zero
    for (int k = 0; k < nbytes; ++k) codes[g * a.bits + k] = (uint8_t)(packed >> (8 * k));
  }
}

template <int ACT, int DT>
void launch(const StochArgs &a, const void *x, void *y, uint8_t *codes, size_t n, int dev,
            cudaStream_t stream) {
  static std::atomic<int> cache[kMaxDevices];
  auto kernel = stochastic_forward_kernel<ACT, DT>;
  const unsigned blocks =
      grid_size(n, (size_t)kThreads * 8, grid_limit(cache, dev, (const void *)kernel, kThreads));
  kernel<<<blocks, kThreads, 0, stream>>>((const uint8_t *)x, (uint8_t *)y, codes, n, a);
}

template <int ACT>
void by_dtype(const StochArgs &a, unswag_dtype dtype, const void *x, void *y, uint8_t *codes,
              size_t n, int dev, cudaStream_t stream) {
  switch (dtype) {
    case UNSWAG_F32: launch<ACT, UNSWAG_F32>(a, x, y, codes, n, dev, stream); break;
    case UNSWAG_F16: launch<ACT, UNSWAG_F16>(a, x, y, codes, n, dev, stream); break;
    default: launch<ACT, UNSWAG_BF16>(a, x, y, codes, n, dev, stream); break;
  }
}

}  // namespace

void launch_stochastic_forward(const unswag_op *op, const float *levels, unswag_dtype dtype,
                               const void *x, void *y, uint8_t *codes, size_t n, int dev,
                               cudaStream_t stream) {
  StochArgs a;
  memset(&a, 0, sizeof a);
  a.seed = op->seed;
  a.bits = op->bits;
  const size_t es = unswag_dtype_size(dtype);
  a.bytewise = ((uintptr_t)x | (uintptr_t)y) % es != 0;
  memcpy(a.levels, levels, sizeof(float) * ((size_t)1 << op->bits));
  switch (op->act) {
    case UNSWAG_SILU: by_dtype<UNSWAG_SILU>(a, dtype, x, y, codes, n, dev, stream); break;
    case UNSWAG_GELU: by_dtype<UNSWAG_GELU>(a, dtype, x, y, codes, n, dev, stream); break;
    default: by_dtype<UNSWAG_GELU_TANH>(a, dtype, x, y, codes, n, dev, stream); break;
  }
}

}  // namespace unswag_cuda

/*
 * kernels.cu - the CUDA forward and backward kernels and their entry points.
 *
 * Same semantics as the CPU kernels (src/cpu/kernels.inc), element for
 * element: the per-element math is the act_math.h code the CPU runs, compiled
 * for the device with --fmad=false, so codes and 16-bit outputs are the same
 * bits (fp32 too: float-float, act_math_f32.h).  Computed NaNs are written as the canonical quiet NaN of the
 * dtype on both sides (x86 and NVIDIA GPUs propagate NaN payloads and signs
 * differently); NaNs passed through by relu / hardtanh / a select keep their
 * bits.
 *
 * Work is split in groups of 8 elements, whose codes are whole bytes
 * (bits bytes a group).  A thread handles U groups per trip of a grid-stride
 * loop; one thread finishes the last partial group.  Two kernel flavours per
 * (activation, dtype, bits): VEC, taken when both data pointers are 16-byte
 * aligned, loads and stores a group with 16-byte vectors; the other loads
 * element by element (byte by byte if a pointer is not even element-aligned).
 * Codes go out as one bits-byte word a group when the code pointer allows
 * it, else byte by byte.
 *
 * The act_math.h float math costs 60-100 instructions an element with FMA
 * contraction off, which makes a plain forward of silu/gelu compute-bound at
 * 30-50% of copy bandwidth.  The bf16 forward of smooth activations therefore
 * fills, at block start, a shared-memory table of (y, code) for the bf16
 * inputs that matter (2^-16 <= |x| < 64) with that same per-element code and
 * looks elements up; the others (zero, tiny, huge, NaN) are computed
 * directly.  Same bits either way, by construction and by the exhaustive test.
 *
 * The codebook travels by value in the kernel parameters (no host-to-device
 * copy).  The 8-bit boundaries and the levels of 2 bits or more are copied to
 * shared memory at block start, so lookups with a divergent index are
 * shared-memory reads; up to 15 boundaries and 2 levels sit in registers.
 *
 * Entry points never allocate, synchronise or copy to the host: CUDA-graph
 * capturable.  Device queries (SM count, occupancy) are cached per device.
 */
#include <cuda_runtime.h>

#include <atomic>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../core/act_math.h"
#include "../core/internal.h"
#include "common.cuh"
#include "element_math.cuh"
#include "stochastic.cuh"

using namespace unswag_cuda;

namespace {

// Launch shapes (overridable with -D for tuning experiments), measured on
// H100: streaming kernels (exact forward, every backward) want small blocks
// with 4 groups a thread in flight; the table kernels one large block an SM
// (one table build an SM); compute-bound kernels (fp16 / fp32 smooth forward)
// gain nothing from unrolling, which would only double their code.
#ifndef UNSWAG_CUDA_THREADS
#define UNSWAG_CUDA_THREADS 128
#endif
#ifndef UNSWAG_CUDA_UNROLL
#define UNSWAG_CUDA_UNROLL 4
#endif
#ifndef UNSWAG_CUDA_LUT_THREADS
#define UNSWAG_CUDA_LUT_THREADS 1024
#endif
#ifndef UNSWAG_CUDA_LUT_UNROLL
#define UNSWAG_CUDA_LUT_UNROLL 2
#endif
#ifndef UNSWAG_CUDA_COMPUTE_THREADS
#define UNSWAG_CUDA_COMPUTE_THREADS 256
#endif
#ifndef UNSWAG_CUDA_COMPUTE_UNROLL
#define UNSWAG_CUDA_COMPUTE_UNROLL 1
#endif

// bf16 forward of smooth activations: a per-block shared-memory table of
// (y | code << 16) for every bf16 input with kLutLo <= |x| bits < kLutHi,
// i.e. 2^-16 <= |x| < 64: 2 x 2816 entries, 22.5 KB, filled at block start by
// the same per-element code; other inputs (zero, tiny, huge, NaN) compute
// directly.  It turns ~60-100 instructions an element into one shared load.
constexpr uint32_t kLutLo = 0x3780u;  // bf16 bits of 2^-16
constexpr uint32_t kLutHi = 0x4280u;  // bf16 bits of 64
constexpr uint32_t kLutSpan = kLutHi - kLutLo;

// run-time flags of a launch
constexpr int kWideCodes = 1;  // code pointer aligned to `bits` bytes
constexpr int kBytewise = 2;   // a data pointer is not aligned to the element size

// backward kinds: what dx = f(dy, code) does
constexpr int kSelect = 0;  // relu, relu6, hardtanh: code ? dy : 0
constexpr int kLeaky = 1;   // leaky_relu:           code ? dy : dy * slope
constexpr int kScale = 2;   // smooth:               dy * level[code]

__host__ __device__ constexpr bool is_exact(int act) { return act <= UNSWAG_HARDTANH; }
__host__ __device__ constexpr bool use_lut(int act, int dt) {
  return !is_exact(act) && dt == UNSWAG_BF16;
}

// launch shape of a kernel
constexpr int kStream = 0, kLut = 1, kCompute = 2;
__host__ __device__ constexpr int fwd_shape(int act, int dt) {
  return is_exact(act) ? kStream : (use_lut(act, dt) ? kLut : kCompute);
}
// threads a block, and groups of 8 elements a thread handles per loop trip
__host__ __device__ constexpr int threads_of(int shape) {
  return shape == kLut ? UNSWAG_CUDA_LUT_THREADS
                       : (shape == kCompute ? UNSWAG_CUDA_COMPUTE_THREADS : UNSWAG_CUDA_THREADS);
}
__host__ __device__ constexpr int unroll_of(int shape) {
  return shape == kLut ? UNSWAG_CUDA_LUT_UNROLL
                       : (shape == kCompute ? UNSWAG_CUDA_COMPUTE_UNROLL : UNSWAG_CUDA_UNROLL);
}

// ---- kernel parameters (passed by value) ---------------------------------------

template <int BITS>
struct FwdArgs {
  float slope, lo, hi;       // exact family (relu6: lo = 0, hi = 6)
  uint32_t lo_out, hi_out;   // lo, hi in the output dtype (clamp targets)
  float b[(1 << BITS) - 1];  // smooth: boundaries
};

template <int BITS>
struct BwdArgs {
  float slope;         // leaky_relu
  float l[1 << BITS];  // smooth: levels
};

// ---- codebook tables -----------------------------------------------------------

// Boundaries: up to 15 in registers (us_smooth_code's linear count unrolls
// over constant indices); 255 in shared memory (binary search).
template <int BITS>
struct Bounds {
  float b[(1 << BITS) - 1];
  __device__ __forceinline__ void init(const float *src, float *) {
#pragma unroll
    for (int j = 0; j < (1 << BITS) - 1; ++j) b[j] = src[j];
  }
  __device__ __forceinline__ uint32_t code(float v) const { return us_smooth_code(v, b, BITS); }
};

template <>
struct Bounds<8> {
  const float *b;
  __device__ __forceinline__ void init(const float *src, float *shared) {
    for (int j = threadIdx.x; j < 255; j += blockDim.x) shared[j] = src[j];
    b = shared;  // the caller syncs the block before use
  }
  __device__ __forceinline__ uint32_t code(float v) const { return us_smooth_code(v, b, 8); }
};

// Levels: 2 in registers (one select), 4 to 256 in shared memory (a
// two-level select chain measured slower than the shared load).
template <int BITS>
struct Levels {
  static constexpr bool kShared = BITS >= 2;
  float r[kShared ? 1 : (1 << BITS)];
  const float *s;
  __device__ __forceinline__ void init(const float *src, float *shared) {
    if constexpr (kShared) {
      for (int j = threadIdx.x; j < (1 << BITS); j += blockDim.x) shared[j] = src[j];
      s = shared;  // the caller syncs the block before use
    } else {
#pragma unroll
      for (int j = 0; j < (1 << BITS); ++j) r[j] = src[j];
    }
  }
  __device__ __forceinline__ float get(uint32_t c) const {
    if constexpr (kShared) return s[c];
    else return c ? r[1] : r[0];
  }
};

// ---- per-element forward and backward ------------------------------------------

template <int ACT, int DT, int BITS>
struct FwdMath {
  float slope, lo, hi;
  uint32_t lo_out, hi_out;
  Bounds<BITS> book;
  const uint32_t *lut;  // use_lut(ACT, DT) only: the shared table

  // returns y's bits, sets the element's code
  __device__ __forceinline__ uint32_t operator()(uint32_t in, uint32_t &code) const {
    if constexpr (use_lut(ACT, DT)) {
      const uint32_t i = (in & 0x7FFFu) - kLutLo;  // wraps below kLutLo
      if (i < kLutSpan) {
        const uint32_t e = lut[i + (in >> 15) * kLutSpan];
        code = e >> 16;
        return e & 0xFFFFu;
      }
    }
    return compute(in, code);
  }

  // A group of 8 elements in place (y's bits); returns their packed codes.
  // With the table: 8 lookups without branches, then the rare misses
  // computed directly under one branch.
  __device__ __forceinline__ uint64_t group(uint32_t e[8]) const {
    uint64_t packed = 0;
    if constexpr (use_lut(ACT, DT)) {
      uint32_t t[8], miss = 0;
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const uint32_t i = (e[k] & 0x7FFFu) - kLutLo;
        const bool hit = i < kLutSpan;
        t[k] = lut[(hit ? i : 0u) + (e[k] >> 15) * kLutSpan];
        miss |= hit ? 0u : 1u << k;
      }
      if (miss != 0) {
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          if (miss & (1u << k)) {
            uint32_t c;
            const uint32_t out = compute(e[k], c);
            t[k] = out | (c << 16);
          }
        }
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        e[k] = t[k] & 0xFFFFu;
        packed |= (uint64_t)(t[k] >> 16) << (k * BITS);
      }
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        uint32_t c;
        e[k] = compute(e[k], c);
        packed |= (uint64_t)c << (k * BITS);
      }
    }
    return packed;
  }

  // the element computed directly
  __device__ __forceinline__ uint32_t compute(uint32_t in, uint32_t &code) const {
    const float v = to_float<DT>(in);
    if constexpr (is_exact(ACT)) {
      if constexpr (ACT == UNSWAG_RELU || ACT == UNSWAG_LEAKY_RELU) {
        code = v > 0.0f ? 1u : 0u;
      } else {
        code = (v > lo && v < hi) ? 1u : 0u;
      }
      if constexpr (ACT == UNSWAG_RELU && DT == UNSWAG_F32) {
        // v > 0 || v != v, on the bits: written on v, nvcc turns this select
        // into FMNMX.NAN, which would replace a NaN input by the canonical NaN
        const bool keep = (int32_t)in > 0 || (in & 0x7FFFFFFFu) > 0x7F800000u;
        return keep ? in : 0u;
      } else if constexpr (ACT == UNSWAG_RELU) return (v > 0.0f || v != v) ? in : 0u;
      else if constexpr (ACT == UNSWAG_LEAKY_RELU) return v > 0.0f ? in : from_float<DT>(v * slope);
      else return v <= lo ? lo_out : (v >= hi ? hi_out : in);
    } else {
      code = book.code(v);
      return smooth_value<ACT, DT>(v);
    }
  }
};

template <int KIND, int DT, int BITS>
struct BwdMath {
  float slope;
  Levels<BITS> lv;

  __device__ __forceinline__ uint32_t operator()(uint32_t in, uint32_t c) const {
    if constexpr (KIND == kSelect) return c ? in : 0u;
    else if constexpr (KIND == kLeaky) return c ? in : from_float<DT>(to_float<DT>(in) * slope);
    else return from_float<DT>(to_float<DT>(in) * lv.get(c));
  }
};

// ---- groups of 8 elements (element access: common.cuh) ----------------------------

// Group g (elements 8g .. 8g+7) into e[0..8).
template <int ES, bool VEC>
__device__ __forceinline__ void load_group(const uint8_t *p, size_t g, uint32_t e[8],
                                           bool bytewise) {
  if constexpr (VEC && ES == 2) {
    const uint4 v = load16(p, g);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      e[2 * k] = w[k] & 0xFFFFu;
      e[2 * k + 1] = w[k] >> 16;
    }
  } else if constexpr (VEC) {
    const uint4 a = load16(p, 2 * g);
    const uint4 b = load16(p, 2 * g + 1);
    e[0] = a.x, e[1] = a.y, e[2] = a.z, e[3] = a.w;
    e[4] = b.x, e[5] = b.y, e[6] = b.z, e[7] = b.w;
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) e[k] = load_elem<ES>(p, g * 8 + k, bytewise);
  }
}

template <int ES, bool VEC>
__device__ __forceinline__ void store_group(uint8_t *p, size_t g, const uint32_t e[8],
                                            bool bytewise) {
  if constexpr (VEC && ES == 2) {
    uint4 v;
    v.x = e[0] | (e[1] << 16);
    v.y = e[2] | (e[3] << 16);
    v.z = e[4] | (e[5] << 16);
    v.w = e[6] | (e[7] << 16);
    store16(p, g, v);
  } else if constexpr (VEC) {
    store16(p, 2 * g, make_uint4(e[0], e[1], e[2], e[3]));
    store16(p, 2 * g + 1, make_uint4(e[4], e[5], e[6], e[7]));
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) store_elem<ES>(p, g * 8 + k, e[k], bytewise);
  }
}

// The BITS code bytes of group g: one word when `wide`, else bytes.
template <int BITS>
__device__ __forceinline__ void store_codes(uint8_t *codes, size_t g, uint64_t packed, bool wide) {
  uint8_t *p = codes + g * BITS;
  if constexpr (BITS == 1) {
    *p = (uint8_t)packed;
  } else {
    if (wide) {
      if constexpr (BITS == 2) *reinterpret_cast<uint16_t *>(p) = (uint16_t)packed;
      else if constexpr (BITS == 4) *reinterpret_cast<uint32_t *>(p) = (uint32_t)packed;
      else *reinterpret_cast<uint64_t *>(p) = packed;
    } else {
#pragma unroll
      for (int k = 0; k < BITS; ++k) p[k] = (uint8_t)(packed >> (8 * k));
    }
  }
}

template <int BITS>
__device__ __forceinline__ uint64_t load_codes(const uint8_t *codes, size_t g, bool wide) {
  const uint8_t *p = codes + g * BITS;
  if constexpr (BITS == 1) {
    return *p;
  } else {
    if (wide) {
      if constexpr (BITS == 2) return *reinterpret_cast<const uint16_t *>(p);
      else if constexpr (BITS == 4) return *reinterpret_cast<const uint32_t *>(p);
      else return *reinterpret_cast<const uint64_t *>(p);
    }
    uint64_t v = 0;
#pragma unroll
    for (int k = 0; k < BITS; ++k) v |= (uint64_t)p[k] << (8 * k);
    return v;
  }
}

// ---- kernels -----------------------------------------------------------------------

template <int ACT, int DT, int BITS, bool VEC>
__global__ void __launch_bounds__(threads_of(fwd_shape(ACT, DT)))
    forward_kernel(const uint8_t *x, uint8_t *y, uint8_t *codes, size_t n, FwdArgs<BITS> a,
                   int flags) {
  constexpr int ES = elem_size(DT);
  const bool wide = flags & kWideCodes;
  const bool bytewise = flags & kBytewise;

  FwdMath<ACT, DT, BITS> m;
  m.slope = a.slope;
  m.lo = a.lo;
  m.hi = a.hi;
  m.lo_out = a.lo_out;
  m.hi_out = a.hi_out;
  if constexpr (!is_exact(ACT)) {
    __shared__ float table[BITS == 8 ? 255 : 1];
    m.book.init(a.b, table);
    if constexpr (BITS == 8) __syncthreads();
  }
  if constexpr (use_lut(ACT, DT)) {
    __shared__ uint32_t lut[2 * kLutSpan];
    for (uint32_t t = threadIdx.x; t < 2 * kLutSpan; t += blockDim.x) {
      const uint32_t in = (t >= kLutSpan ? 0x8000u : 0u) | (kLutLo + t % kLutSpan);
      uint32_t c;
      const uint32_t out = m.compute(in, c);
      lut[t] = out | (c << 16);
    }
    __syncthreads();
    m.lut = lut;
  }

  constexpr int T = threads_of(fwd_shape(ACT, DT)), U = unroll_of(fwd_shape(ACT, DT));
  const size_t full = n / 8;  // whole groups
  const size_t stride = (size_t)gridDim.x * (T * U);
  for (size_t g0 = (size_t)blockIdx.x * (T * U) + threadIdx.x; g0 < full; g0 += stride) {
    uint32_t e[U][8];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t g = g0 + (size_t)u * T;
      if (g < full) load_group<ES, VEC>(x, g, e[u], bytewise);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t g = g0 + (size_t)u * T;
      if (g < full) {
        const uint64_t packed = m.group(e[u]);
        store_group<ES, VEC>(y, g, e[u], bytewise);
        store_codes<BITS>(codes, g, packed, wide);
      }
    }
  }

  // the last partial group: one thread, element by element
  const int rem = (int)(n % 8);
  if (rem != 0 && blockIdx.x == 0 && threadIdx.x == 0) {
    const size_t base = full * 8;
    uint64_t packed = 0;
    for (int k = 0; k < rem; ++k) {
      uint32_t c;
      const uint32_t out = m(load_elem<ES>(x, base + k, bytewise), c);
      store_elem<ES>(y, base + k, out, bytewise);
      packed |= (uint64_t)c << (k * BITS);
    }
    const int nbytes = (rem * BITS + 7) / 8;  // unused high bits stay zero
    for (int k = 0; k < nbytes; ++k) codes[full * BITS + k] = (uint8_t)(packed >> (8 * k));
  }
}

template <int KIND, int DT, int BITS, bool VEC>
__global__ void __launch_bounds__(threads_of(kStream))
    backward_kernel(const uint8_t *dy, const uint8_t *codes, uint8_t *dx, size_t n, BwdArgs<BITS> a,
                    int flags) {
  constexpr int ES = elem_size(DT);
  constexpr uint32_t mask = (1u << BITS) - 1u;
  const bool wide = flags & kWideCodes;
  const bool bytewise = flags & kBytewise;

  BwdMath<KIND, DT, BITS> m;
  m.slope = a.slope;
  if constexpr (KIND == kScale) {
    __shared__ float table[Levels<BITS>::kShared ? (1 << BITS) : 1];
    m.lv.init(a.l, table);
    if constexpr (Levels<BITS>::kShared) __syncthreads();
  }

  constexpr int T = threads_of(kStream), U = unroll_of(kStream);
  const size_t full = n / 8;
  const size_t stride = (size_t)gridDim.x * (T * U);
  for (size_t g0 = (size_t)blockIdx.x * (T * U) + threadIdx.x; g0 < full; g0 += stride) {
    uint32_t e[U][8];
    uint64_t packed[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t g = g0 + (size_t)u * T;
      if (g < full) {
        load_group<ES, VEC>(dy, g, e[u], bytewise);
        packed[u] = load_codes<BITS>(codes, g, wide);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const size_t g = g0 + (size_t)u * T;
      if (g < full) {
#pragma unroll
        for (int k = 0; k < 8; ++k)
          e[u][k] = m(e[u][k], (uint32_t)(packed[u] >> (k * BITS)) & mask);
        store_group<ES, VEC>(dx, g, e[u], bytewise);
      }
    }
  }

  const int rem = (int)(n % 8);
  if (rem != 0 && blockIdx.x == 0 && threadIdx.x == 0) {
    const size_t base = full * 8;
    const int nbytes = (rem * BITS + 7) / 8;  // read no byte past the buffer
    uint64_t packed = 0;
    for (int k = 0; k < nbytes; ++k) packed |= (uint64_t)codes[full * BITS + k] << (8 * k);
    for (int k = 0; k < rem; ++k) {
      const uint32_t c = (uint32_t)(packed >> (k * BITS)) & mask;
      store_elem<ES>(dx, base + k, m(load_elem<ES>(dy, base + k, bytewise), c), bytewise);
    }
  }
}

// ---- launchers (launch geometry: common.cuh) ------------------------------------------

// What a launcher needs besides the codebook.
struct Call {
  const void *in;  // x or dy
  const uint8_t *codes_in;
  void *out;  // y or dx
  uint8_t *codes_out;
  size_t n;
  int dev;
  bool vec;
  int flags;
  cudaStream_t stream;
  const unswag_op *op;
  const unswag_codebook *cb;
  unswag_dtype dtype;
};

// One launch of kernel(args...) in a shape's T threads a block, with blocks for
// c.n elements at U groups of 8 a thread, at most what the device runs at once
// (grid_limit, kept in the launcher's cache).
template <int SHAPE, class Kernel, class... Args>
void launch(std::atomic<int> *cache, const Call &c, Kernel kernel, Args... args) {
  constexpr int T = threads_of(SHAPE), U = unroll_of(SHAPE);
  const unsigned blocks =
      grid_size(c.n, (size_t)T * U * 8, grid_limit(cache, c.dev, (const void *)kernel, T));
  kernel<<<blocks, T, 0, c.stream>>>(args...);
}

template <int ACT, int DT, int BITS>
FwdArgs<BITS> forward_args(const Call &c) {
  FwdArgs<BITS> a;
  memset(&a, 0, sizeof a);
  a.slope = c.op->slope;
  a.lo = ACT == UNSWAG_RELU6 ? 0.0f : c.op->lo;
  a.hi = ACT == UNSWAG_RELU6 ? 6.0f : c.op->hi;
  if constexpr (DT == UNSWAG_F32) {
    a.lo_out = us_f32_to_bits(a.lo);
    a.hi_out = us_f32_to_bits(a.hi);
  } else if constexpr (DT == UNSWAG_BF16) {
    a.lo_out = us_f32_to_bf16(a.lo);
    a.hi_out = us_f32_to_bf16(a.hi);
  } else {
    a.lo_out = us_f32_to_f16(a.lo);
    a.hi_out = us_f32_to_f16(a.hi);
  }
  if constexpr (!is_exact(ACT)) memcpy(a.b, c.cb->boundaries, sizeof a.b);
  return a;
}

template <int ACT, int DT, int BITS, bool VEC>
void launch_forward(const Call &c) {
  static std::atomic<int> cache[kMaxDevices];
  launch<fwd_shape(ACT, DT)>(cache, c, forward_kernel<ACT, DT, BITS, VEC>, (const uint8_t *)c.in,
                             (uint8_t *)c.out, c.codes_out, c.n, forward_args<ACT, DT, BITS>(c),
                             c.flags);
}

template <int KIND, int DT, int BITS, bool VEC>
void launch_backward(const Call &c) {
  static std::atomic<int> cache[kMaxDevices];
  BwdArgs<BITS> a;
  memset(&a, 0, sizeof a);
  a.slope = c.op->slope;
  if constexpr (KIND == kScale) memcpy(a.l, c.cb->levels, sizeof a.l);
  launch<kStream>(cache, c, backward_kernel<KIND, DT, BITS, VEC>, (const uint8_t *)c.in, c.codes_in,
                  (uint8_t *)c.out, c.n, a, c.flags);
}

// ---- dispatch: (direction, activation or kind, dtype, bits, vec) -> one kernel ---------
// A: the activation (forward) or the backward kind (kSelect, kLeaky, kScale).

template <bool FWD, int A, int DT, int BITS>
void by_vec(const Call &c) {
  if constexpr (FWD) {
    if (c.vec) launch_forward<A, DT, BITS, true>(c);
    else launch_forward<A, DT, BITS, false>(c);
  } else {
    if (c.vec) launch_backward<A, DT, BITS, true>(c);
    else launch_backward<A, DT, BITS, false>(c);
  }
}

// Only smooth activations (forward) and kScale (backward) depend on bits.
template <bool FWD, int A, int DT>
void by_bits(const Call &c) {
  if constexpr (FWD ? is_exact(A) : A != kScale) {
    by_vec<FWD, A, DT, 1>(c);
  } else {
    switch (c.op->bits) {
      case 1: by_vec<FWD, A, DT, 1>(c); break;
      case 2: by_vec<FWD, A, DT, 2>(c); break;
      case 4: by_vec<FWD, A, DT, 4>(c); break;
      default: by_vec<FWD, A, DT, 8>(c); break;
    }
  }
}

template <bool FWD, int A>
void by_dtype(const Call &c) {
  switch (c.dtype) {
    case UNSWAG_F32: by_bits<FWD, A, UNSWAG_F32>(c); break;
    case UNSWAG_F16: by_bits<FWD, A, UNSWAG_F16>(c); break;
    default: by_bits<FWD, A, UNSWAG_BF16>(c); break;
  }
}

void forward_dispatch(const Call &c) {
  switch (c.op->act) {
    case UNSWAG_RELU: by_dtype<true, UNSWAG_RELU>(c); break;
    case UNSWAG_LEAKY_RELU: by_dtype<true, UNSWAG_LEAKY_RELU>(c); break;
    case UNSWAG_RELU6: by_dtype<true, UNSWAG_RELU6>(c); break;
    case UNSWAG_HARDTANH: by_dtype<true, UNSWAG_HARDTANH>(c); break;
    case UNSWAG_SILU: by_dtype<true, UNSWAG_SILU>(c); break;
    case UNSWAG_GELU: by_dtype<true, UNSWAG_GELU>(c); break;
    default: by_dtype<true, UNSWAG_GELU_TANH>(c); break;
  }
}

void backward_dispatch(const Call &c) {
  if (c.op->act == UNSWAG_LEAKY_RELU) by_dtype<false, kLeaky>(c);
  else if (is_exact(c.op->act)) by_dtype<false, kSelect>(c);
  else by_dtype<false, kScale>(c);
}

// ---- what both entry points share ----------------------------------------------------

// Validation in the CPU order (op, dtype, sizes, null pointers); fills *cb.
unswag_status validate(const char *fn, const unswag_op *op, unswag_dtype dtype, size_t n,
                       bool any_null, unswag_codebook *cb) {
  unswag_status s = unswag_resolve_op(op, cb);
  if (s != UNSWAG_OK) return s;
  if (unswag_dtype_size(dtype) == 0)
    return unswag_fail(UNSWAG_ERR_BAD_DTYPE, "%s: unknown dtype %d", fn, (int)dtype);
  size_t nbytes;
  s = unswag_code_bytes(n, op->bits, &nbytes);
  if (s != UNSWAG_OK) return s;
  if (n > 0 && any_null)
    return unswag_fail(UNSWAG_ERR_NULL_POINTER, "%s: NULL data or code pointer with n = %zu", fn,
                       n);
  return UNSWAG_OK;
}

int flags_for(uintptr_t data_ptrs_or, uintptr_t codes, int bits, size_t es) {
  int f = 0;
  if (bits == 1 || codes % (uintptr_t)bits == 0) f |= kWideCodes;
  if (data_ptrs_or % es != 0) f |= kBytewise;
  return f;
}

// Checks, then one launch.  in/out: x/y (forward: codes_out set) or dy/dx
// (backward: codes_in set); ptrs: the caller's pointers, in its order.
unswag_status run(const char *fn, void (*dispatch)(const Call &), const unswag_op *op,
                  unswag_dtype dtype, const void *in, const uint8_t *codes_in, void *out,
                  uint8_t *codes_out, size_t n, cudaStream_t stream,
                  std::initializer_list<ArgPtr> ptrs) {
  unswag_codebook cb;
  memset(&cb, 0, sizeof cb);
  unswag_status s = validate(fn, op, dtype, n, any_null(ptrs), &cb);
  if (s != UNSWAG_OK) return s;
  int dev = 0;
  if ((s = device_checks(fn, n, ptrs, &dev)) != UNSWAG_OK || n == 0) return s;
  const uintptr_t data = (uintptr_t)in | (uintptr_t)out;
  const uintptr_t codes = (uintptr_t)codes_in | (uintptr_t)codes_out;  // one is null
  const int flags = flags_for(data, codes, op->bits, unswag_dtype_size(dtype));
  const bool vec = data % 16 == 0;
  if (codes_out && op->code_kind == UNSWAG_CODES_STOCHASTIC) {  // its own kernel: stochastic.cu
    launch_stochastic_forward(op, cb.levels, dtype, in, out, codes_out, n, dev, stream);
    return launch_status(fn);
  }
  const Call c = {in, codes_in, out, codes_out, n, dev, vec, flags, stream, op, &cb, dtype};
  dispatch(c);
  return launch_status(fn);
}

}  // namespace

// ---- entry points ------------------------------------------------------------------

extern "C" {

int unswag_cuda_built(void) { return 1; }

unswag_status unswag_forward_cuda(const unswag_op *op, unswag_dtype dtype, const void *x, void *y,
                                  uint8_t *codes, size_t n, void *stream) {
  return run("unswag_forward_cuda", forward_dispatch, op, dtype, x, nullptr, y, codes, n,
             (cudaStream_t)stream, {{"x", x}, {"y", y}, {"codes", codes}});
}

unswag_status unswag_backward_cuda(const unswag_op *op, unswag_dtype dtype, const void *dy,
                                   const uint8_t *codes, void *dx, size_t n, void *stream) {
  return run("unswag_backward_cuda", backward_dispatch, op, dtype, dy, codes, dx, nullptr, n,
             (cudaStream_t)stream, {{"dy", dy}, {"codes", codes}, {"dx", dx}});
}

}  // extern "C"

/*
 * gated.cu - the CUDA gated MLP kernels (SwiGLU / GeGLU elementwise part):
 *   forward   h = act(g) * u
 *   backward  du = dh * act(g),  dg = dh * u * act'(g)
 *
 * Same semantics as the CPU kernels (src/cpu/gated.c), element for element:
 * the per-element math is core/gated_math.h, the code the CPU runs, compiled
 * for the device with --fmad=false, so 16-bit outputs (NaN included) are the
 * same bits as on the CPU; fp32 outputs go through CUDA's double exp/erfc
 * instead of libm's (each within 1 ulp of the correctly rounded value).
 *
 * One specialised kernel per (activation, dtype, access mode), grid-stride:
 *  - kVec:  every pointer 16-byte aligned: 16-byte loads and stores
 *           (8 elements of fp16/bf16, 4 of fp32), then the tail element-wise;
 *  - kElem: every pointer element-aligned: one element per load;
 *  - kByte: some pointer not even element-aligned: byte loads and stores.
 * A thread reads all inputs of its elements before writing any output, so
 * dg == g and du == u (and h == g or h == u) are fine.
 *
 * Entry points never allocate, synchronise or copy to the host (CUDA-graph
 * capturable); the launch geometry (SMs x resident blocks) is queried once
 * per kernel and device and cached.
 */
#include <cuda_runtime.h>

#include <atomic>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../core/gated_math.h"
#include "../core/internal.h"
#include "common.cuh"

using namespace unswag_cuda;

namespace {

constexpr int kThreads = 256;  // threads a block

enum Mode { kVec = 0, kElem = 1, kByte = 2 };

// ---- one element: the shared math ------------------------------------------------------

template <int ACT, int DT>
__device__ __forceinline__ uint32_t fwd_one(uint32_t g, uint32_t u) {
  if constexpr (DT == UNSWAG_F32) return us_gated_fwd32(ACT, g, u);
  else return us_gated_fwd16(ACT, DT == UNSWAG_BF16, (uint16_t)g, (uint16_t)u);
}

template <int ACT, int DT>
__device__ __forceinline__ void bwd_one(uint32_t dh, uint32_t g, uint32_t u, uint32_t *dg,
                                        uint32_t *du) {
  if constexpr (DT == UNSWAG_F32) {
    us_gated_bwd32(ACT, dh, g, u, dg, du);
  } else {
    uint16_t a, b;
    us_gated_bwd16(ACT, DT == UNSWAG_BF16, (uint16_t)dh, (uint16_t)g, (uint16_t)u, &a, &b);
    *dg = a;
    *du = b;
  }
}

// ---- kernels -------------------------------------------------------------------------------

// The grid-stride loop of both kernels: with kVec, vec(v) for each 16-byte
// vector v of the arrays, then elem(i) for the elements left (all of them in
// kElem and kByte).
template <int ES, int MODE, class Vec, class Elem>
__device__ __forceinline__ void grid_stride(size_t n, Vec vec, Elem elem) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t done = 0;
  if constexpr (MODE == kVec) {
    const size_t nv = n / (16 / ES);
    for (size_t v = tid; v < nv; v += stride) vec(v);
    done = nv * (16 / ES);
  }
  for (size_t i = done + tid; i < n; i += stride) elem(i);
}

template <int ACT, int DT, int MODE>
__global__ void __launch_bounds__(kThreads)
    gated_forward_kernel(const uint8_t *g, const uint8_t *u, uint8_t *h, size_t n) {
  constexpr int ES = elem_size(DT);
  constexpr bool B = MODE == kByte;
  grid_stride<ES, MODE>(
      n,
      [&](size_t v) {
        const uint4 a = load16(g, v), b = load16(u, v);
        uint4 o = make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int k = 0; k < 16 / ES; ++k)
          vec_set<ES>(o, k, fwd_one<ACT, DT>(vec_get<ES>(a, k), vec_get<ES>(b, k)));
        store16(h, v, o);
      },
      [&](size_t i) {
        store_elem<ES>(h, i, fwd_one<ACT, DT>(load_elem<ES>(g, i, B), load_elem<ES>(u, i, B)), B);
      });
}

template <int ACT, int DT, int MODE>
__global__ void __launch_bounds__(kThreads)
    gated_backward_kernel(const uint8_t *dh, const uint8_t *g, const uint8_t *u, uint8_t *dg,
                          uint8_t *du, size_t n) {
  constexpr int ES = elem_size(DT);
  constexpr bool B = MODE == kByte;
  grid_stride<ES, MODE>(
      n,
      [&](size_t v) {
        const uint4 a = load16(dh, v), b = load16(g, v), c = load16(u, v);
        uint4 og = make_uint4(0, 0, 0, 0), ou = make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int k = 0; k < 16 / ES; ++k) {
          uint32_t eg, eu;
          bwd_one<ACT, DT>(vec_get<ES>(a, k), vec_get<ES>(b, k), vec_get<ES>(c, k), &eg, &eu);
          vec_set<ES>(og, k, eg);
          vec_set<ES>(ou, k, eu);
        }
        store16(dg, v, og);
        store16(du, v, ou);
      },
      [&](size_t i) {
        uint32_t eg, eu;
        bwd_one<ACT, DT>(load_elem<ES>(dh, i, B), load_elem<ES>(g, i, B), load_elem<ES>(u, i, B),
                         &eg, &eu);
        store_elem<ES>(dg, i, eg, B);
        store_elem<ES>(du, i, eu, B);
      });
}

// ---- launchers (launch geometry: common.cuh) ------------------------------------------------

struct Call {
  const void *dh, *g, *u;  // inputs (dh: backward only)
  void *h, *dg, *du;       // outputs (h: forward; dg, du: backward)
  size_t n;
  int dev;
  int mode;
  cudaStream_t stream;
};

// One launch of kernel(args...): blocks for c.n elements (16-byte vectors in
// kVec), at most what the device runs at once (grid_limit, in the launcher's cache).
template <int DT, int MODE, class Kernel, class... Args>
void launch(std::atomic<int> *cache, const Call &c, Kernel kernel, Args... args) {
  const size_t per = MODE == kVec ? 16 / elem_size(DT) : 1;
  const unsigned blocks =
      grid_size(c.n, kThreads * per, grid_limit(cache, c.dev, (const void *)kernel, kThreads));
  kernel<<<blocks, kThreads, 0, c.stream>>>(args...);
}

template <int ACT, int DT, int MODE>
void launch_forward(const Call &c) {
  static std::atomic<int> cache[kMaxDevices];
  launch<DT, MODE>(cache, c, gated_forward_kernel<ACT, DT, MODE>, (const uint8_t *)c.g,
                   (const uint8_t *)c.u, (uint8_t *)c.h, c.n);
}

template <int ACT, int DT, int MODE>
void launch_backward(const Call &c) {
  static std::atomic<int> cache[kMaxDevices];
  launch<DT, MODE>(cache, c, gated_backward_kernel<ACT, DT, MODE>, (const uint8_t *)c.dh,
                   (const uint8_t *)c.g, (const uint8_t *)c.u, (uint8_t *)c.dg, (uint8_t *)c.du,
                   c.n);
}

// ---- dispatch: (activation, dtype, mode) -> one specialised kernel ---------------------------

template <bool FWD, int ACT, int DT, int MODE>
void launch(const Call &c) {
  if constexpr (FWD) launch_forward<ACT, DT, MODE>(c);
  else launch_backward<ACT, DT, MODE>(c);
}

template <bool FWD, int ACT, int DT>
void by_mode(const Call &c) {
  switch (c.mode) {
    case kVec: launch<FWD, ACT, DT, kVec>(c); break;
    case kElem: launch<FWD, ACT, DT, kElem>(c); break;
    default: launch<FWD, ACT, DT, kByte>(c); break;
  }
}

template <bool FWD, int ACT>
void by_dtype(const Call &c, unswag_dtype dtype) {
  switch (dtype) {
    case UNSWAG_F32: by_mode<FWD, ACT, UNSWAG_F32>(c); break;
    case UNSWAG_F16: by_mode<FWD, ACT, UNSWAG_F16>(c); break;
    default: by_mode<FWD, ACT, UNSWAG_BF16>(c); break;
  }
}

template <bool FWD>
void dispatch(const Call &c, unswag_activation act, unswag_dtype dtype) {
  switch (act) {
    case UNSWAG_SILU: by_dtype<FWD, UNSWAG_SILU>(c, dtype); break;
    case UNSWAG_GELU: by_dtype<FWD, UNSWAG_GELU>(c, dtype); break;
    default: by_dtype<FWD, UNSWAG_GELU_TANH>(c, dtype); break;
  }
}

// ---- what both entry points share ------------------------------------------------------------

// The access mode every pointer allows (p_or: all pointers OR-ed together).
int mode_for(uintptr_t p_or, size_t es) {
  if (p_or % 16 == 0) return kVec;
  if (p_or % es == 0) return kElem;
  return kByte;
}

// Checks (arguments: unswag_gated_validate, shared with the CPU; pointers: common.cuh),
// then one launch.  c: the caller's pointers, n and stream; ptrs: its pointers in its order.
template <bool FWD>
unswag_status run(const char *fn, unswag_activation act, unswag_dtype dtype, Call c,
                  std::initializer_list<ArgPtr> ptrs) {
  unswag_status s = unswag_gated_validate(fn, act, dtype, c.n, any_null(ptrs));
  if (s != UNSWAG_OK) return s;
  if ((s = device_checks(fn, c.n, ptrs, &c.dev)) != UNSWAG_OK || c.n == 0) return s;
  c.mode = mode_for(or_of(ptrs), unswag_dtype_size(dtype));
  dispatch<FWD>(c, act, dtype);
  return launch_status(fn);
}

}  // namespace

// ---- entry points -----------------------------------------------------------------------------

extern "C" {

unswag_status unswag_gated_forward_cuda(unswag_activation act, unswag_dtype dtype, const void *g,
                                        const void *u, void *h, size_t n, void *stream) {
  // fields dh, g, u, h, dg, du, n, dev, mode, stream (dev and mode: set by run)
  const Call c = {nullptr, g, u, h, nullptr, nullptr, n, 0, 0, (cudaStream_t)stream};
  return run<true>("unswag_gated_forward_cuda", act, dtype, c, {{"g", g}, {"u", u}, {"h", h}});
}

unswag_status unswag_gated_backward_cuda(unswag_activation act, unswag_dtype dtype, const void *dh,
                                         const void *g, const void *u, void *dg, void *du, size_t n,
                                         void *stream) {
  const Call c = {dh, g, u, nullptr, dg, du, n, 0, 0, (cudaStream_t)stream};
  return run<false>("unswag_gated_backward_cuda", act, dtype, c,
                    {{"dh", dh}, {"g", g}, {"u", u}, {"dg", dg}, {"du", du}});
}

}  // extern "C"

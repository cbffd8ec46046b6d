/*
 * common.cuh - helpers shared by the CUDA kernel files (kernels.cu, gated.cu,
 * rmsnorm.cu): element access, 16-byte vector lanes, launch geometry, and
 * the checks every entry point makes before it launches anything (so an
 * entry point states only its own pointers, Call and dispatch).
 *
 * Everything lives in namespace unswag_cuda; host functions are inline so
 * each .cu file may include this header (one definition at link time).
 */
#ifndef UNSWAG_CUDA_COMMON_CUH
#define UNSWAG_CUDA_COMMON_CUH

#include <cuda_runtime.h>

#include <atomic>
#include <initializer_list>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../core/internal.h"

namespace unswag_cuda {

constexpr int kMaxDevices = 64;  // devices whose launch geometry is cached

__host__ __device__ constexpr int elem_size(int dt) { return dt == UNSWAG_F32 ? 4 : 2; }

// ---- element access (values as bits in a uint32_t, 16-bit dtypes zero-extended) ------

// Element i of an array of ES-byte elements; byte by byte when the pointer
// is not aligned to ES (little-endian, as the device is).
template <int ES>
__device__ __forceinline__ uint32_t load_elem(const uint8_t *p, size_t i, bool bytewise) {
  if (bytewise) {
    const uint8_t *q = p + i * ES;
    uint32_t v = 0;
#pragma unroll
    for (int k = 0; k < ES; ++k) v |= (uint32_t)q[k] << (8 * k);
    return v;
  }
  if constexpr (ES == 2) return reinterpret_cast<const uint16_t *>(p)[i];
  else return reinterpret_cast<const uint32_t *>(p)[i];
}

template <int ES>
__device__ __forceinline__ void store_elem(uint8_t *p, size_t i, uint32_t v, bool bytewise) {
  if (bytewise) {
    uint8_t *q = p + i * ES;
#pragma unroll
    for (int k = 0; k < ES; ++k) q[k] = (uint8_t)(v >> (8 * k));
    return;
  }
  if constexpr (ES == 2) reinterpret_cast<uint16_t *>(p)[i] = (uint16_t)v;
  else reinterpret_cast<uint32_t *>(p)[i] = v;
}

// 16-byte loads and stores: vector i of p (p 16-byte aligned).
__device__ __forceinline__ uint4 load16(const uint8_t *p, size_t i) {
  return reinterpret_cast<const uint4 *>(p)[i];
}
__device__ __forceinline__ void store16(uint8_t *p, size_t i, uint4 v) {
  reinterpret_cast<uint4 *>(p)[i] = v;
}

// Element k of a 16-byte vector of ES-byte elements.
template <int ES>
__device__ __forceinline__ uint32_t vec_get(const uint4 &v, int k) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  if constexpr (ES == 4) return w[k];
  else return (w[k >> 1] >> (16 * (k & 1))) & 0xFFFFu;
}

template <int ES>
__device__ __forceinline__ void vec_set(uint4 &v, int k, uint32_t e) {
  if constexpr (ES == 4) {
    (k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w) = e;
  } else {
    uint32_t &w = (k >> 1) == 0 ? v.x : (k >> 1) == 1 ? v.y : (k >> 1) == 2 ? v.z : v.w;
    const int sh = 16 * (k & 1);
    w = (w & ~(0xFFFFu << sh)) | (e << sh);
  }
}

// ---- launch geometry -----------------------------------------------------------------

// Most blocks worth launching for `kernel` on `dev` (SMs x resident blocks per
// SM at `threads` a block), queried once per (kernel, device) and kept in `cache`.
inline int grid_limit(std::atomic<int> *cache, int dev, const void *kernel, int threads) {
  if (dev >= 0 && dev < kMaxDevices) {
    const int v = cache[dev].load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int sms = 0, per_sm = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      sms <= 0) {
    (void)cudaGetLastError();
    sms = 1;
  }
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) != cudaSuccess ||
      per_sm <= 0) {
    (void)cudaGetLastError();
    per_sm = 1;
  }
  const int v = sms * per_sm;
  if (dev >= 0 && dev < kMaxDevices) cache[dev].store(v, std::memory_order_relaxed);
  return v;
}

// Blocks for n work items, per_block of them a block per trip: at least 1,
// at most limit.
inline unsigned grid_size(size_t n, size_t per_block, int limit) {
  const size_t want = (n + per_block - 1) / per_block;
  return (unsigned)(want < 1 ? 1 : (want < (size_t)limit ? want : (size_t)limit));
}

// ---- checks before a launch ------------------------------------------------------------

inline unswag_status current_device(const char *fn, int *dev) {
  const cudaError_t e = cudaGetDevice(dev);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return unswag_fail(UNSWAG_ERR_CUDA_NO_DEVICE, "%s: no usable CUDA device (%s: %s)", fn,
                       cudaGetErrorName(e), cudaGetErrorString(e));
  }
  return UNSWAG_OK;
}

// A pointer the kernels can dereference on `dev`: device memory of that
// device, managed memory, or pinned host memory mapped at the same address.
inline unswag_status check_pointer(const char *fn, const char *what, const void *p, int dev) {
  cudaPointerAttributes attr;
  memset(&attr, 0, sizeof attr);
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return unswag_fail(UNSWAG_ERR_BAD_POINTER, "%s: %s = %p is not a CUDA pointer (%s)", fn, what,
                       p, cudaGetErrorString(e));
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice:
      if (attr.device != dev)
        return unswag_fail(UNSWAG_ERR_BAD_POINTER,
                           "%s: %s = %p is memory of device %d, the current device is %d", fn, what,
                           p, attr.device, dev);
      return UNSWAG_OK;
    case cudaMemoryTypeManaged: return UNSWAG_OK;
    case cudaMemoryTypeHost:
      if (attr.devicePointer == p) return UNSWAG_OK;
      return unswag_fail(UNSWAG_ERR_BAD_POINTER,
                         "%s: %s = %p is pinned host memory not mapped at the same device "
                         "address",
                         fn, what, p);
    default:
      return unswag_fail(UNSWAG_ERR_BAD_POINTER,
                         "%s: %s = %p is host memory (not allocated or registered with CUDA)", fn,
                         what, p);
  }
}

// The status of the launches just queued (an error of the launch itself).
inline unswag_status launch_status(const char *fn) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return unswag_fail(UNSWAG_ERR_CUDA_LAUNCH, "%s: kernel launch failed (%s: %s)", fn,
                       cudaGetErrorName(e), cudaGetErrorString(e));
  return UNSWAG_OK;
}

// ---- what every entry point does around its launch ------------------------------------

// A pointer an entry point passes to its kernels, under its parameter name (for messages).
struct ArgPtr {
  const char *name;
  const void *p;
};

inline bool any_null(std::initializer_list<ArgPtr> ptrs) {
  for (const ArgPtr &a : ptrs)
    if (!a.p) return true;
  return false;
}

// All pointers OR-ed together: aligned to A iff every one is.
inline uintptr_t or_of(std::initializer_list<ArgPtr> ptrs) {
  uintptr_t v = 0;
  for (const ArgPtr &a : ptrs) v |= (uintptr_t)a.p;
  return v;
}

// After the argument checks, before any launch: the current device (looked up
// even for n == 0, so that a call without a device says so), then, for n > 0,
// each pointer in the order given.  The caller returns on an error or n == 0.
inline unswag_status device_checks(const char *fn, size_t n, std::initializer_list<ArgPtr> ptrs,
                                   int *dev) {
  unswag_status s = current_device(fn, dev);
  if (s != UNSWAG_OK || n == 0) return s;
  for (const ArgPtr &a : ptrs)
    if ((s = check_pointer(fn, a.name, a.p, *dev)) != UNSWAG_OK) return s;
  return UNSWAG_OK;
}

}  // namespace unswag_cuda

#endif

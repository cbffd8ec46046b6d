/*
 * rmsnorm.cu - the CUDA RMSNorm forward and backward (HF LlamaRMSNorm).
 *
 * Same bytes as the CPU kernel (src/cpu/rmsnorm.c): the element math and the
 * summation order are core/rmsnorm_math.h's, compiled with --fmad=false;
 * sqrt and division are IEEE (no fast-math), so y, rstd, dx and dw agree
 * byte for byte.
 *
 * A block of 32 * NW threads (NW = 1, 2, 4 or 8 warps, by row length) works
 * on one row at a time.  The 256 summation lanes of a row map onto it as
 * lane s * 32 + j -> thread (warp s % NW, lane j), which keeps each lane's
 * own local accumulator; a warp reduces its lanes with the shuffle-down
 * tree and every thread then adds the 8 set sums in the tree order.  Rows
 * are read twice (sum, then output); the second read mostly hits L2.
 * 16-byte loads when every row and pointer is 16-byte aligned, else element
 * loads (byte loads if a pointer is not even element-aligned).
 *
 * Forward: a grid-stride loop over rows.  Backward: block c takes chunk c of
 * us_rms_chunk_rows(rows) rows (at most 512 chunks), writes dx row by row and
 * keeps its fp32 column sums in row c of the caller's workspace (each
 * thread only touches its own columns, so no atomics); a second kernel adds
 * the chunk sums in order into dw.  Entry points never allocate or
 * synchronise (CUDA-graph capturable).
 */
#include <cuda_runtime.h>

#include <atomic>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../core/internal.h"
#include "../core/rmsnorm_math.h"
#include "common.cuh"

using namespace unswag_cuda;

namespace {

template <int DT>
struct AccOf {
  using T = float;  // fp16 / bf16: float sums
};
template <>
struct AccOf<UNSWAG_F32> {
  using T = double;  // fp32: double sums
};

constexpr int kFinalizeThreads = 256;

// ---- a group of 8 elements of a row (bits; 0 past the row's end) ---------------------

template <int ES, bool VEC>
__device__ __forceinline__ void load_group(const uint8_t *row, size_t v, size_t cols, uint32_t e[8],
                                           bool bytewise) {
  const size_t i0 = v * 8;
  if constexpr (VEC && ES == 2) {  // cols % 8 == 0: the group is whole
    const uint4 q = load16(row, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) e[k] = vec_get<2>(q, k);
  } else if constexpr (VEC) {  // fp32, cols % 4 == 0: one or two whole halves
    const uint4 a = load16(row, 2 * v);
    const uint4 b = i0 + 4 < cols ? load16(row, 2 * v + 1) : make_uint4(0, 0, 0, 0);
    e[0] = a.x, e[1] = a.y, e[2] = a.z, e[3] = a.w;
    e[4] = b.x, e[5] = b.y, e[6] = b.z, e[7] = b.w;
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) e[k] = i0 + k < cols ? load_elem<ES>(row, i0 + k, bytewise) : 0u;
  }
}

template <int ES, bool VEC>
__device__ __forceinline__ void store_group(uint8_t *row, size_t v, size_t cols,
                                            const uint32_t e[8], bool bytewise) {
  const size_t i0 = v * 8;
  if constexpr (VEC && ES == 2) {
    uint4 q = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int k = 0; k < 8; ++k) vec_set<2>(q, k, e[k]);
    store16(row, v, q);
  } else if constexpr (VEC) {
    store16(row, 2 * v, make_uint4(e[0], e[1], e[2], e[3]));
    if (i0 + 4 < cols) store16(row, 2 * v + 1, make_uint4(e[4], e[5], e[6], e[7]));
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (i0 + k < cols) store_elem<ES>(row, i0 + k, e[k], bytewise);
  }
}

// ---- the fixed-order row sum ----------------------------------------------------------

__device__ __forceinline__ float pair8(const float t[8]) { return us_rms_pair8_f(t); }
__device__ __forceinline__ double pair8(const double t[8]) { return us_rms_pair8_d(t); }

// The row sum from each thread's lane accumulators acc[k] (lane set
// warp + k * NW, lane j): shuffle tree per set, then the tree over the 8 set
// sums, which every thread computes from shared memory.
template <typename Acc, int NW>
__device__ __forceinline__ Acc block_sum(const Acc (&acc)[8 / NW], Acc *sets) {
  const int j = threadIdx.x & 31, wi = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < 8 / NW; ++k) {
    Acc a = acc[k];
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) a = a + __shfl_down_sync(0xFFFFFFFFu, a, off);
    if (j == 0) sets[wi + k * NW] = a;
  }
  __syncthreads();
  Acc t[8];
#pragma unroll
  for (int s = 0; s < 8; ++s) t[s] = sets[s];
  __syncthreads();  // sets is reused by the next row
#pragma unroll
  for (int off = 4; off >= 1; off >>= 1)
#pragma unroll
    for (int s = 0; s < off; ++s) t[s] = t[s] + t[s + off];
  return t[0];
}

// Group v of lane set k of this thread (v >= groups: none).
template <int NW>
__device__ __forceinline__ size_t lane_group(size_t base, int k) {
  const int j = threadIdx.x & 31, wi = threadIdx.x >> 5;
  return base + (size_t)(wi + k * NW) * 32 + j;
}

// The row's sum of group_sum(v), the pair8 sum of group v's 8 terms, over the
// groups v < groups in the fixed order: lane accumulators, then block_sum.
template <int NW, typename Acc, class GroupSum>
__device__ __forceinline__ Acc row_sum(size_t groups, Acc *sets, GroupSum group_sum) {
  constexpr int SP = 8 / NW;  // lane sets of this thread
  Acc acc[SP];
#pragma unroll
  for (int k = 0; k < SP; ++k) acc[k] = 0;
  for (size_t base = 0; base < groups; base += US_RMS_LANES) {
#pragma unroll
    for (int k = 0; k < SP; ++k) {
      const size_t v = lane_group<NW>(base, k);
      if (v < groups) acc[k] = acc[k] + group_sum(v);
    }
  }
  return block_sum<Acc, NW>(acc, sets);
}

template <int DT>
__device__ __forceinline__ typename AccOf<DT>::T square_term(uint32_t x) {
  const float xf = us_rms_to_f32(DT, x);
  if constexpr (DT == UNSWAG_F32) return (double)xf * (double)xf;
  else return xf * xf;
}

template <int DT>
__device__ __forceinline__ typename AccOf<DT>::T dot_term(uint32_t dy, uint32_t x, uint32_t w,
                                                          float rstd) {
  const float g = us_rms_to_f32(DT, dy) * us_rms_to_f32(DT, w);
  const float nf = us_rms_to_f32(DT, x) * rstd;
  if constexpr (DT == UNSWAG_F32) return (double)g * (double)nf;
  else return g * nf;
}

// ---- kernels -----------------------------------------------------------------------------

template <int DT, int NW, bool VEC>
__global__ void __launch_bounds__(NW * 32)
    rms_forward_kernel(const uint8_t *x, const uint8_t *w, uint8_t *y, float *rstd, size_t rows,
                       size_t cols, float eps, bool bytewise) {
  using Acc = typename AccOf<DT>::T;
  constexpr int ES = elem_size(DT), T = NW * 32;
  __shared__ Acc sets[8];
  const size_t groups = (cols + 7) / 8, rb = cols * ES;
  for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const uint8_t *xr = x + r * rb;
    uint8_t *yr = y + r * rb;
    const Acc sum = row_sum<NW>(groups, sets, [&](size_t v) {
      uint32_t e[8];
      load_group<ES, VEC>(xr, v, cols, e, bytewise);
      Acc t[8];
#pragma unroll
      for (int q = 0; q < 8; ++q) t[q] = square_term<DT>(e[q]);
      return pair8(t);
    });
    float rs;
    if constexpr (DT == UNSWAG_F32) rs = us_rms_rstd_d(sum, cols, eps);
    else rs = us_rms_rstd_f(sum, cols, eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    // every read of the row is done (block_sum synced): y may be x
    for (size_t v = threadIdx.x; v < groups; v += T) {
      uint32_t ex[8], ew[8];
      load_group<ES, VEC>(xr, v, cols, ex, bytewise);
      load_group<ES, VEC>(w, v, cols, ew, bytewise);
#pragma unroll
      for (int q = 0; q < 8; ++q) ex[q] = us_rms_fwd_elem(DT, ex[q], ew[q], rs);
      store_group<ES, VEC>(yr, v, cols, ex, bytewise);
    }
  }
}

template <int DT, int NW, bool VEC>
__global__ void __launch_bounds__(NW * 32)
    rms_backward_kernel(const uint8_t *dy, const uint8_t *x, const uint8_t *w, const float *rstd,
                        uint8_t *dx, float *ws, size_t rows, size_t cols, size_t per,
                        bool bytewise) {
  using Acc = typename AccOf<DT>::T;
  constexpr int ES = elem_size(DT), T = NW * 32;
  __shared__ Acc sets[8];
  const size_t groups = (cols + 7) / 8, rb = cols * ES;
  const size_t r0 = (size_t)blockIdx.x * per, r1 = rows - r0 < per ? rows : r0 + per;
  float *wsr = ws + (size_t)blockIdx.x * cols;  // this chunk's column sums
  for (size_t r = r0; r < r1; ++r) {
    const uint8_t *dyr = dy + r * rb, *xr = x + r * rb;
    uint8_t *dxr = dx + r * rb;
    const float rs = rstd[r];
    const Acc sum = row_sum<NW>(groups, sets, [&](size_t v) {
      uint32_t ed[8], ex[8], ew[8];
      load_group<ES, VEC>(dyr, v, cols, ed, bytewise);
      load_group<ES, VEC>(xr, v, cols, ex, bytewise);
      load_group<ES, VEC>(w, v, cols, ew, bytewise);
      Acc t[8];
#pragma unroll
      for (int q = 0; q < 8; ++q) t[q] = dot_term<DT>(ed[q], ex[q], ew[q], rs);
      return pair8(t);
    });
    float mean;
    if constexpr (DT == UNSWAG_F32) mean = us_rms_mean_d(sum, cols);
    else mean = us_rms_mean_f(sum, cols);
    // every read of dy for the sum is done: dx may be dy
    for (size_t v = threadIdx.x; v < groups; v += T) {
      uint32_t ed[8], ex[8], ew[8], out[8];
      load_group<ES, VEC>(dyr, v, cols, ed, bytewise);
      load_group<ES, VEC>(xr, v, cols, ex, bytewise);
      load_group<ES, VEC>(w, v, cols, ew, bytewise);
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        out[q] = us_rms_dx_elem(DT, ed[q], ex[q], ew[q], rs, mean);
        const size_t i = v * 8 + q;
        if (i < cols) {
          const float prev = r == r0 ? 0.0f : wsr[i];
          wsr[i] = prev + us_rms_dw_term(DT, ed[q], ex[q], rs);
        }
      }
      store_group<ES, VEC>(dxr, v, cols, out, bytewise);
    }
  }
}

// dw[j] += the chunk sums of column j, in chunk order.
__global__ void __launch_bounds__(kFinalizeThreads)
    rms_dw_finalize_kernel(const float *ws, float *dw, size_t chunks, size_t cols) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += stride) {
    float total = 0.0f;
    for (size_t c = 0; c < chunks; ++c) total = total + ws[c * cols + j];
    dw[j] = us_canon_nan(dw[j] + total);
  }
}

// ---- launchers -------------------------------------------------------------------------------

struct Call {
  const void *dy, *x, *w;
  const float *rstd_in;
  void *y, *dx;
  float *rstd_out, *dw, *ws;
  size_t rows, cols;
  float eps;
  int dev;
  cudaStream_t stream;
  bool vec, bytewise;  // set by access_mode
};

// Warps a block: enough for one 8-element group a thread per 256-lane trip.
int warps_for(size_t cols) {
  const size_t groups = (cols + 7) / 8;
  return groups <= 32 ? 1 : groups <= 64 ? 2 : groups <= 128 ? 4 : 8;
}

template <int DT, int NW, bool VEC>
void launch_forward(const Call &c) {
  static std::atomic<int> cache[kMaxDevices];
  auto kernel = rms_forward_kernel<DT, NW, VEC>;
  const unsigned blocks =
      grid_size(c.rows, 1, grid_limit(cache, c.dev, (const void *)kernel, NW * 32));
  kernel<<<blocks, NW * 32, 0, c.stream>>>((const uint8_t *)c.x, (const uint8_t *)c.w,
                                           (uint8_t *)c.y, c.rstd_out, c.rows, c.cols, c.eps,
                                           c.bytewise);
}

template <int DT, int NW, bool VEC>
void launch_backward(const Call &c) {
  const size_t per = us_rms_chunk_rows(c.rows), chunks = us_rms_chunks(c.rows);
  rms_backward_kernel<DT, NW, VEC><<<(unsigned)chunks, NW * 32, 0, c.stream>>>(
      (const uint8_t *)c.dy, (const uint8_t *)c.x, (const uint8_t *)c.w, c.rstd_in, (uint8_t *)c.dx,
      c.ws, c.rows, c.cols, per, c.bytewise);
  static std::atomic<int> cache[kMaxDevices];
  const unsigned blocks =
      grid_size(c.cols, kFinalizeThreads,
                grid_limit(cache, c.dev, (const void *)rms_dw_finalize_kernel, kFinalizeThreads));
  rms_dw_finalize_kernel<<<blocks, kFinalizeThreads, 0, c.stream>>>(c.ws, c.dw, chunks, c.cols);
}

template <bool FWD, int DT, int NW>
void by_vec(const Call &c) {
  if (FWD) {
    if (c.vec) launch_forward<DT, NW, true>(c);
    else launch_forward<DT, NW, false>(c);
  } else {
    if (c.vec) launch_backward<DT, NW, true>(c);
    else launch_backward<DT, NW, false>(c);
  }
}

template <bool FWD, int DT>
void by_warps(const Call &c) {
  switch (warps_for(c.cols)) {
    case 1: by_vec<FWD, DT, 1>(c); break;
    case 2: by_vec<FWD, DT, 2>(c); break;
    case 4: by_vec<FWD, DT, 4>(c); break;
    default: by_vec<FWD, DT, 8>(c); break;
  }
}

template <bool FWD>
void dispatch(const Call &c, unswag_dtype dtype) {
  switch (dtype) {
    case UNSWAG_F32: by_warps<FWD, UNSWAG_F32>(c); break;
    case UNSWAG_F16: by_warps<FWD, UNSWAG_F16>(c); break;
    default: by_warps<FWD, UNSWAG_BF16>(c); break;
  }
}

// Access mode: 16-byte vectors when every data pointer and the row length in
// bytes are multiples of 16; bytewise when some pointer is not element-aligned.
void access_mode(Call &c, uintptr_t data_or, size_t es) {
  c.vec = (data_or | (uintptr_t)(c.cols * es)) % 16 == 0;
  c.bytewise = data_or % es != 0;
}

}  // namespace

// ---- entry points --------------------------------------------------------------------------

extern "C" {

unswag_status unswag_rmsnorm_forward_cuda(unswag_dtype dtype, const void *x, const void *w, void *y,
                                          float *rstd, size_t rows, size_t cols, float eps,
                                          float weight_offset, void *stream) {
  static const char fn[] = "unswag_rmsnorm_forward_cuda";
  unswag_status s =
      unswag_rmsnorm_forward_check(fn, dtype, x, w, y, rstd, rows, cols, eps, weight_offset);
  if (s != UNSWAG_OK || rows == 0) return s;
  int dev = 0;
  s = device_checks(fn, rows, {{"x", x}, {"w", w}, {"y", y}, {"rstd", rstd}}, &dev);
  if (s != UNSWAG_OK) return s;
  Call c = {/*dy=*/nullptr,      x,    w,
            /*rstd_in=*/nullptr, y,
            /*dx=*/nullptr,
            /*rstd_out=*/rstd,
            /*dw=*/nullptr,
            /*ws=*/nullptr,      rows, cols, eps, dev, (cudaStream_t)stream};
  access_mode(c, (uintptr_t)x | (uintptr_t)w | (uintptr_t)y, unswag_dtype_size(dtype));
  dispatch<true>(c, dtype);
  return launch_status(fn);
}

unswag_status unswag_rmsnorm_backward_cuda(unswag_dtype dtype, const void *dy, const void *x,
                                           const void *w, const float *rstd, void *dx,
                                           float *dw_accum, void *workspace, size_t workspace_bytes,
                                           size_t rows, size_t cols, float weight_offset,
                                           void *stream) {
  static const char fn[] = "unswag_rmsnorm_backward_cuda";
  const unswag_workspace ws = {workspace, workspace_bytes};
  unswag_status s = unswag_rmsnorm_backward_check(fn, dtype, dy, x, w, rstd, dx, dw_accum, rows,
                                                  cols, weight_offset, &ws);
  if (s != UNSWAG_OK || rows == 0) return s;
  int dev = 0;
  s = device_checks(fn, rows,
                    {{"dy", dy},
                     {"x", x},
                     {"w", w},
                     {"rstd", rstd},
                     {"dx", dx},
                     {"dw_accum", dw_accum},
                     {"workspace", workspace}},
                    &dev);
  if (s != UNSWAG_OK) return s;
  Call c = {dy,
            x,
            w,
            rstd,
            /*y=*/nullptr,
            dx,
            /*rstd_out=*/nullptr,
            /*dw=*/dw_accum,
            /*ws=*/(float *)workspace,
            rows,
            cols,
            /*eps=*/0.0f,
            dev,
            (cudaStream_t)stream};
  access_mode(c, (uintptr_t)dy | (uintptr_t)x | (uintptr_t)w | (uintptr_t)dx,
              unswag_dtype_size(dtype));
  dispatch<false>(c, dtype);
  return launch_status(fn);
}

}  // extern "C"

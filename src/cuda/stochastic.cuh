// stochastic.cuh - the CUDA forward of stochastic codes (src/cuda/stochastic.cu),
// called by unswag_forward_cuda (kernels.cu) after its checks.
#ifndef UNSWAG_CUDA_STOCHASTIC_CUH
#define UNSWAG_CUDA_STOCHASTIC_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "unswag.h"

namespace unswag_cuda {

// y = f(x) and the stochastic codes of op (validated; levels = its
// unswag_stochastic_levels) for n > 0 elements on `dev`; queues one launch.
void launch_stochastic_forward(const unswag_op *op, const float *levels, unswag_dtype dtype,
                               const void *x, void *y, uint8_t *codes, size_t n, int dev,
                               cudaStream_t stream);

}  // namespace unswag_cuda

#endif

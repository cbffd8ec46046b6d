/* CUDA_OK(call): a CUDA runtime call the GPU tests (and bench/gpu/bench_cuda.cu) cannot
 * go on without; on an error it names the call and its place and exits with status 2. */
#ifndef UNSWAG_TEST_CUDA_OK_H
#define UNSWAG_TEST_CUDA_OK_H
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_OK(call)                                                                        \
  do {                                                                                       \
    cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(2);                                                                               \
    }                                                                                        \
  } while (0)

#endif

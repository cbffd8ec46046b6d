/* CUDA entry points of a build without CUDA: validate, then say so. */
#include "../core/internal.h"

int unswag_cuda_built(void) { return 0; }

unswag_status unswag_forward_cuda(const unswag_op *op, unswag_dtype dtype, const void *x, void *y,
                                  uint8_t *codes, size_t n, void *stream) {
  (void)op, (void)dtype, (void)x, (void)y, (void)codes, (void)n, (void)stream;
  return unswag_fail(UNSWAG_ERR_CUDA_NOT_BUILT,
                     "unswag_forward_cuda: libunswag was built without CUDA");
}

unswag_status unswag_backward_cuda(const unswag_op *op, unswag_dtype dtype, const void *dy,
                                   const uint8_t *codes, void *dx, size_t n, void *stream) {
  (void)op, (void)dtype, (void)dy, (void)codes, (void)dx, (void)n, (void)stream;
  return unswag_fail(UNSWAG_ERR_CUDA_NOT_BUILT,
                     "unswag_backward_cuda: libunswag was built without CUDA");
}

unswag_status unswag_gated_forward_cuda(unswag_activation act, unswag_dtype dtype, const void *g,
                                        const void *u, void *h, size_t n, void *stream) {
  (void)act, (void)dtype, (void)g, (void)u, (void)h, (void)n, (void)stream;
  return unswag_fail(UNSWAG_ERR_CUDA_NOT_BUILT,
                     "unswag_gated_forward_cuda: libunswag was built without CUDA");
}

unswag_status unswag_gated_backward_cuda(unswag_activation act, unswag_dtype dtype, const void *dh,
                                         const void *g, const void *u, void *dg, void *du, size_t n,
                                         void *stream) {
  (void)act, (void)dtype, (void)dh, (void)g, (void)u, (void)dg, (void)du, (void)n, (void)stream;
  return unswag_fail(UNSWAG_ERR_CUDA_NOT_BUILT,
                     "unswag_gated_backward_cuda: libunswag was built without CUDA");
}

unswag_status unswag_rmsnorm_forward_cuda(unswag_dtype dtype, const void *x, const void *w, void *y,
                                          float *rstd, size_t rows, size_t cols, float eps,
                                          float weight_offset, void *stream) {
  (void)dtype, (void)x, (void)w, (void)y, (void)rstd, (void)rows, (void)cols, (void)eps,
      (void)weight_offset, (void)stream;
  return unswag_fail(UNSWAG_ERR_CUDA_NOT_BUILT,
                     "unswag_rmsnorm_forward_cuda: libunswag was built without CUDA");
}

unswag_status unswag_rmsnorm_backward_cuda(unswag_dtype dtype, const void *dy, const void *x,
                                           const void *w, const float *rstd, void *dx,
                                           float *dw_accum, void *workspace, size_t workspace_bytes,
                                           size_t rows, size_t cols, float weight_offset,
                                           void *stream) {
  (void)dtype, (void)dy, (void)x, (void)w, (void)rstd, (void)dx, (void)dw_accum, (void)workspace,
      (void)workspace_bytes, (void)rows, (void)cols, (void)weight_offset, (void)stream;
  return unswag_fail(UNSWAG_ERR_CUDA_NOT_BUILT,
                     "unswag_rmsnorm_backward_cuda: libunswag was built without CUDA");
}

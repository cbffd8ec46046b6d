/* CUDA entry points of a build without CUDA: validate, then say so. */
#include "../core/internal.h"

int unswag_cuda_built(void) { return 0; }

unswag_status unswag_forward_cuda(const unswag_op *op, unswag_dtype dtype, const void *x,
                                  void *y, uint8_t *codes, size_t n, void *stream) {
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

unswag_status unswag_gated_backward_cuda(unswag_activation act, unswag_dtype dtype,
                                         const void *dh, const void *g, const void *u, void *dg,
                                         void *du, size_t n, void *stream) {
  (void)act, (void)dtype, (void)dh, (void)g, (void)u, (void)dg, (void)du, (void)n, (void)stream;
  return unswag_fail(UNSWAG_ERR_CUDA_NOT_BUILT,
                     "unswag_gated_backward_cuda: libunswag was built without CUDA");
}

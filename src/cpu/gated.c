/* CPU entry points of the gated MLP kernels (SwiGLU / GeGLU elementwise part;
 * the loops are in gated_kernels.inc): validate everything, then run the best
 * variant over the thread pool.  Nothing is written on error. */
#include <stdint.h>
#include "../core/internal.h"
#include "cpu_kernels.h"
#include "parallel.h"

/* One call, split into pieces by unswag_cpu_parallel_for. */
typedef struct {
  const unswag_cpu_kernels *k;
  int act, dtype;
  size_t es; /* element size */
  const uint8_t *dh, *g, *u;
  uint8_t *h, *dg, *du;
} gated_call;

static void forward_piece(void *ctx, size_t b, size_t e) {
  const gated_call *c = (const gated_call *)ctx;
  const size_t o = b * c->es;
  c->k->gated_forward(c->act, c->dtype, c->g + o, c->u + o, c->h + o, e - b);
}

static void backward_piece(void *ctx, size_t b, size_t e) {
  const gated_call *c = (const gated_call *)ctx;
  const size_t o = b * c->es;
  c->k->gated_backward(c->act, c->dtype, c->dh + o, c->g + o, c->u + o, c->dg + o, c->du + o,
                       e - b);
}

static void run(unswag_piece_fn piece, gated_call *c, unswag_activation act, unswag_dtype dtype,
                size_t n) {
  c->k = unswag_cpu_kernels_best();
  c->act = (int)act;
  c->dtype = (int)dtype;
  c->es = unswag_dtype_size(dtype);
  unswag_cpu_parallel_for(n, unswag_cpu_thread_count(UNSWAG_PATH_AUTO, 0, n), piece, c);
}

unswag_status unswag_gated_forward(unswag_activation act, unswag_dtype dtype, const void *g,
                                   const void *u, void *h, size_t n) {
  unswag_status s = unswag_gated_validate("unswag_gated_forward", act, dtype, n, !g || !u || !h);
  if (s != UNSWAG_OK || n == 0) return s;
  gated_call c = {0};
  c.g = (const uint8_t *)g;
  c.u = (const uint8_t *)u;
  c.h = (uint8_t *)h;
  run(forward_piece, &c, act, dtype, n);
  return UNSWAG_OK;
}

unswag_status unswag_gated_backward(unswag_activation act, unswag_dtype dtype, const void *dh,
                                    const void *g, const void *u, void *dg, void *du, size_t n) {
  unswag_status s =
      unswag_gated_validate("unswag_gated_backward", act, dtype, n, !dh || !g || !u || !dg || !du);
  if (s != UNSWAG_OK || n == 0) return s;
  gated_call c = {0};
  c.dh = (const uint8_t *)dh;
  c.g = (const uint8_t *)g;
  c.u = (const uint8_t *)u;
  c.dg = (uint8_t *)dg;
  c.du = (uint8_t *)du;
  run(backward_piece, &c, act, dtype, n);
  return UNSWAG_OK;
}

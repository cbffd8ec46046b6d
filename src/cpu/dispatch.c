/* CPU entry points of the activations: validate everything, then pick the
 * kernel variant and thread count and run.  Nothing is written before
 * validation has passed. */
#include <stdint.h>
#include "../core/internal.h"
#include "cpu_kernels.h"
#include "parallel.h"
#include "stochastic.h"

/* Shared validation of the call; fills the kernel arguments. */
static unswag_status prepare(const unswag_op *op, unswag_dtype dtype, const void *in,
                             const void *out, const void *codes, size_t n,
                             const unswag_cpu_options *opts, unswag_codebook *cb,
                             unswag_kargs *ka) {
  unswag_status s = unswag_resolve_op(op, cb);
  if (s != UNSWAG_OK) return s;
  if (unswag_dtype_size(dtype) == 0)
    return unswag_fail(UNSWAG_ERR_BAD_DTYPE, "unknown dtype %d", (int)dtype);
  size_t nbytes;
  s = unswag_code_bytes(n, op->bits, &nbytes);
  if (s != UNSWAG_OK) return s;
  if (n > 0 && (!in || !out || !codes))
    return unswag_fail(UNSWAG_ERR_NULL_POINTER, "NULL data or code pointer with n = %zu", n);
  if (opts) {
    if ((unsigned)opts->path >= UNSWAG_PATH_COUNT_)
      return unswag_fail(UNSWAG_ERR_BAD_PARAM, "unknown cpu path %d", (int)opts->path);
    if (opts->num_threads < 0)
      return unswag_fail(UNSWAG_ERR_BAD_PARAM, "num_threads must be >= 0; got %d",
                         opts->num_threads);
  }
  ka->act = op->act;
  ka->dtype = dtype;
  ka->bits = op->bits;
  ka->slope = op->slope;
  ka->lo = op->lo;
  ka->hi = op->hi;
  ka->boundaries = cb->boundaries;
  ka->levels = cb->levels;
  return UNSWAG_OK;
}

/* One call, split into pieces by unswag_cpu_parallel_for. */
typedef struct {
  const unswag_cpu_kernels *k;
  unswag_kargs ka;
  size_t es;            /* element size */
  const uint8_t *in;    /* x or dy */
  uint8_t *out;         /* y or dx */
  const uint8_t *codes; /* forward writes them: its caller passed them non-const */
  uint64_t seed;        /* stochastic codes only */
} act_call;

static void forward_piece(void *ctx, size_t b, size_t e) {
  const act_call *c = (const act_call *)ctx;
  c->k->forward(&c->ka, c->in + b * c->es, c->out + b * c->es,
                (uint8_t *)c->codes + b / 8 * (size_t)c->ka.bits, e - b);
}

/* Stochastic codes: scalar kernel for y; the piece passes its global offset b. */
static void stochastic_forward_piece(void *ctx, size_t b, size_t e) {
  const act_call *c = (const act_call *)ctx;
  unswag_cpu_stochastic_forward(&c->ka, c->seed, b, c->in + b * c->es, c->out + b * c->es,
                                (uint8_t *)c->codes + b / 8 * (size_t)c->ka.bits, e - b);
}

static void backward_piece(void *ctx, size_t b, size_t e) {
  const act_call *c = (const act_call *)ctx;
  c->k->backward(&c->ka, c->in + b * c->es, c->codes + b / 8 * (size_t)c->ka.bits,
                 c->out + b * c->es, e - b);
}

/* Validates, then runs piece over [0, n) with the variant and threads the options ask for. */
static unswag_status run(const unswag_op *op, unswag_dtype dtype, const void *in, void *out,
                         const uint8_t *codes, size_t n, const unswag_cpu_options *opts,
                         unswag_piece_fn piece) {
  unswag_codebook cb;
  act_call c;
  unswag_status s = prepare(op, dtype, in, out, codes, n, opts, &cb, &c.ka);
  if (s != UNSWAG_OK || n == 0) return s;
  const unswag_cpu_path path = opts ? opts->path : UNSWAG_PATH_AUTO;
  c.k = path == UNSWAG_PATH_SCALAR ? &unswag_cpu_kernels_scalar : unswag_cpu_kernels_best();
  c.es = unswag_dtype_size(dtype);
  c.in = (const uint8_t *)in;
  c.out = (uint8_t *)out;
  c.codes = codes;
  c.seed = op->seed;
  if (piece == forward_piece && op->code_kind == UNSWAG_CODES_STOCHASTIC)
    piece = stochastic_forward_piece;
  const int threads = unswag_cpu_thread_count(path, opts ? opts->num_threads : 0, n);
  unswag_cpu_parallel_for(n, threads, piece, &c);
  return UNSWAG_OK;
}

unswag_status unswag_forward_advanced(const unswag_op *op, unswag_dtype dtype, const void *x,
                                      void *y, uint8_t *codes, size_t n,
                                      const unswag_cpu_options *opts) {
  return run(op, dtype, x, y, codes, n, opts, forward_piece);
}

unswag_status unswag_backward_advanced(const unswag_op *op, unswag_dtype dtype, const void *dy,
                                       const uint8_t *codes, void *dx, size_t n,
                                       const unswag_cpu_options *opts) {
  return run(op, dtype, dy, dx, codes, n, opts, backward_piece);
}

unswag_status unswag_forward(const unswag_op *op, unswag_dtype dtype, const void *x, void *y,
                             uint8_t *codes, size_t n) {
  return unswag_forward_advanced(op, dtype, x, y, codes, n, NULL);
}

unswag_status unswag_backward(const unswag_op *op, unswag_dtype dtype, const void *dy,
                              const uint8_t *codes, void *dx, size_t n) {
  return unswag_backward_advanced(op, dtype, dy, codes, dx, n, NULL);
}

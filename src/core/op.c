/* Activation names, op construction and validation, code buffer sizes. */
#include <math.h>
#include "internal.h"

static const char *const act_names[UNSWAG_ACTIVATION_COUNT_] = {
    "relu", "leaky_relu", "relu6", "hardtanh", "silu", "gelu", "gelu_tanh"};

const char *unswag_activation_name(unswag_activation act) {
  return (unsigned)act < UNSWAG_ACTIVATION_COUNT_ ? act_names[act] : NULL;
}

int unswag_activation_is_exact(unswag_activation act) {
  if ((unsigned)act >= UNSWAG_ACTIVATION_COUNT_) return -1;
  return act <= UNSWAG_HARDTANH;
}

unswag_op unswag_op_make(unswag_activation act, int bits) {
  unswag_op op = {0};
  op.act = act;
  op.bits = bits;
  op.slope = 0.01f;
  op.lo = -1.0f;
  op.hi = 1.0f;
  return op;
}

unswag_status unswag_resolve_op(const unswag_op *op, unswag_codebook *cb) {
  if (!op) return unswag_fail(UNSWAG_ERR_NULL_POINTER, "op is NULL");
  int exact = unswag_activation_is_exact(op->act);
  if (exact < 0)
    return unswag_fail(UNSWAG_ERR_BAD_ACTIVATION, "unknown activation %d", (int)op->act);
  if ((unsigned)op->code_kind >= UNSWAG_CODE_KIND_COUNT_)
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "unknown code_kind %d", (int)op->code_kind);
  if (op->code_kind == UNSWAG_CODES_STOCHASTIC && exact)
    return unswag_fail(UNSWAG_ERR_BAD_ACTIVATION,
                       "stochastic codes take silu, gelu or gelu_tanh; %s is exact",
                       act_names[op->act]);
  if (exact) {
    if (op->bits != 1)
      return unswag_fail(UNSWAG_ERR_BAD_BITS, "%s is exact with 1 bit; got bits=%d",
                         act_names[op->act], op->bits);
    if (op->act == UNSWAG_LEAKY_RELU && !isfinite(op->slope))
      return unswag_fail(UNSWAG_ERR_BAD_PARAM, "leaky_relu slope must be finite");
    if (op->act == UNSWAG_HARDTANH && !(isfinite(op->lo) && isfinite(op->hi) && op->lo < op->hi))
      return unswag_fail(UNSWAG_ERR_BAD_PARAM, "hardtanh needs finite lo < hi; got [%g, %g]",
                         (double)op->lo, (double)op->hi);
    return UNSWAG_OK;
  }
  if (!unswag_bits_valid(op->bits))
    return unswag_fail(UNSWAG_ERR_BAD_BITS, "%s takes bits in {1, 2, 4, 8}; got %d",
                       act_names[op->act], op->bits);
  if (op->code_kind == UNSWAG_CODES_STOCHASTIC) {
    if (op->codebook)
      return unswag_fail(UNSWAG_ERR_BAD_CODEBOOK,
                         "stochastic codes use their own level grid; codebook must be NULL");
    /* the built-in boundaries keep *cb a valid codebook; the kernels read only its levels */
    unswag_status s = unswag_codebook_builtin(op->act, op->bits, cb);
    if (s != UNSWAG_OK) return s;
    return unswag_stochastic_levels(op->act, op->bits, cb->levels);
  }
  if (op->codebook) {
    unswag_status s = unswag_codebook_validate(op->codebook);
    if (s != UNSWAG_OK) return s;
    if (op->codebook->bits != op->bits)
      return unswag_fail(UNSWAG_ERR_BAD_CODEBOOK, "codebook has %d bits, op has %d",
                         op->codebook->bits, op->bits);
    *cb = *op->codebook;
    return UNSWAG_OK;
  }
  return unswag_codebook_builtin(op->act, op->bits, cb);
}

unswag_status unswag_op_validate(const unswag_op *op) {
  unswag_codebook cb;
  return unswag_resolve_op(op, &cb);
}

unswag_status unswag_code_bytes(size_t n, int bits, size_t *out_bytes) {
  if (!out_bytes) return unswag_fail(UNSWAG_ERR_NULL_POINTER, "out_bytes is NULL");
  if (!unswag_bits_valid(bits))
    return unswag_fail(UNSWAG_ERR_BAD_BITS, "bits must be 1, 2, 4 or 8; got %d", bits);
  /* the data itself (up to 4 bytes an element) must be addressable too */
  if (n > SIZE_MAX / 4)
    return unswag_fail(UNSWAG_ERR_SIZE_OVERFLOW, "n = %zu elements overflows size_t bytes", n);
  *out_bytes = n / 8 * (size_t)bits + (n % 8 * (size_t)bits + 7) / 8;
  return UNSWAG_OK;
}

unswag_status unswag_gated_validate(const char *fn, unswag_activation act, unswag_dtype dtype,
                                    size_t n, int any_null) {
  if (act != UNSWAG_SILU && act != UNSWAG_GELU && act != UNSWAG_GELU_TANH)
    return unswag_fail(UNSWAG_ERR_BAD_ACTIVATION,
                       "%s: activation %d is not a gate activation (silu, gelu, gelu_tanh)", fn,
                       (int)act);
  if (unswag_dtype_size(dtype) == 0)
    return unswag_fail(UNSWAG_ERR_BAD_DTYPE, "%s: unknown dtype %d", fn, (int)dtype);
  if (n > SIZE_MAX / 4)
    return unswag_fail(UNSWAG_ERR_SIZE_OVERFLOW, "%s: n = %zu elements overflows size_t bytes", fn,
                       n);
  if (n > 0 && any_null)
    return unswag_fail(UNSWAG_ERR_NULL_POINTER, "%s: NULL tensor pointer with n = %zu", fn, n);
  return UNSWAG_OK;
}

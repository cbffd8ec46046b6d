/*
 * unswag_jax_ffi.c - XLA FFI handlers for JAX, written in C against the FFI
 * C API header shipped with jaxlib (xla/ffi/api/c_api.h).
 *
 * Four handlers, registered from Python (python/unswag/jax/_ffi.py) with
 * jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(fn), platform=...):
 *
 *   unswag_jax_forward_cpu    (x) -> (y, codes)      platform "cpu"
 *   unswag_jax_backward_cpu   (dy, codes) -> (dx)    platform "cpu"
 *   unswag_jax_forward_cuda   (x) -> (y, codes)      platform "CUDA"
 *   unswag_jax_backward_cuda  (dy, codes) -> (dx)    platform "CUDA"
 *
 * Attributes (all optional, looked up by name):
 *   act (s32, unswag_activation), bits (s32), slope, lo, hi (f32),
 *   boundaries, levels (f32 arrays: a custom codebook for smooth
 *   activations; both empty or absent = the built-in table).
 *
 * Rows.  x is treated as rows of its last axis: `rows` = product of the
 * leading dims, each row gets its own ceil(len*bits/8) code bytes, so the
 * codes buffer holds rows * ceil(len*bits/8) bytes.  A rank-1 x is one row
 * (the layout of docs/design.md section 2 for the flattened array); batched
 * calls under jax.vmap (vmap_method="broadcast_all") add leading axes and
 * keep each example's codes separate.  When len*bits is a multiple of 8
 * the rows are contiguous and one library call covers them all.
 *
 * Every handler first answers XLA's metadata query (the API version of the
 * header it was compiled against, and its traits), then checks the call
 * frame, the stage, the argument and result count, types, dtypes and
 * sizes, returning typed XLA errors; nothing is written on error.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "unswag.h"
#include "xla/ffi/api/c_api.h"

/* FFI API 0.4 (jaxlib 0.11) renamed the frame's extension list type from
 * XLA_FFI_Extension_Base to XLA_FFI_InternalExtension (same layout); the
 * metadata handshake reads it, so name it for either header. */
#if XLA_FFI_API_MAJOR == 0 && XLA_FFI_API_MINOR < 4
typedef XLA_FFI_Extension_Base us_frame_extension;
#else
typedef XLA_FFI_InternalExtension us_frame_extension;
#endif

#if defined(__SSE__) || defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define UNSWAG_JAX_X86_CSR 1
#endif

#if defined(_WIN32)
#define UNSWAG_JAX_API __declspec(dllexport)
#else
#define UNSWAG_JAX_API __attribute__((visibility("default")))
#endif

/* ---- errors ----------------------------------------------------------------- */

static XLA_FFI_Error *ffi_error(const XLA_FFI_Api *api, XLA_FFI_Error_Code code, const char *fmt,
                                ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  XLA_FFI_Error_Create_Args args;
  memset(&args, 0, sizeof args);
  args.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
  args.extension_start = NULL;
  args.message = msg; /* XLA copies the message */
  args.errc = code;
  return api->XLA_FFI_Error_Create(&args);
}

static XLA_FFI_Error_Code code_of_status(unswag_status s) {
  switch (s) {
    case UNSWAG_ERR_CUDA_NOT_BUILT:
    case UNSWAG_ERR_CUDA_NO_DEVICE: return XLA_FFI_Error_Code_FAILED_PRECONDITION;
    case UNSWAG_ERR_NO_MEMORY: return XLA_FFI_Error_Code_RESOURCE_EXHAUSTED;
    case UNSWAG_ERR_CUDA_LAUNCH: return XLA_FFI_Error_Code_INTERNAL;
    case UNSWAG_ERR_SIZE_OVERFLOW: return XLA_FFI_Error_Code_OUT_OF_RANGE;
    default: return XLA_FFI_Error_Code_INVALID_ARGUMENT;
  }
}

static XLA_FFI_Error *status_error(const XLA_FFI_Api *api, const char *fn, unswag_status s) {
  const char *detail = unswag_last_error();
  return ffi_error(api, code_of_status(s), "%s: %s%s%s%s", fn, unswag_status_string(s),
                   detail && *detail ? " (" : "", detail ? detail : "",
                   detail && *detail ? ")" : "");
}

/* ---- metadata handshake and frame checks ------------------------------------------- */

/* XLA calls every handler once at registration with a metadata extension
 * in the frame: we answer the FFI version we were compiled against and
 * our traits, and do nothing else. */
static XLA_FFI_Error *answer_metadata(const XLA_FFI_Api *api, us_frame_extension *ext,
                                      XLA_FFI_Handler_Traits traits) {
  XLA_FFI_Metadata_Extension *me = (XLA_FFI_Metadata_Extension *)ext;
  if (me->extension_base.struct_size < XLA_FFI_Metadata_Extension_STRUCT_SIZE)
    return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "unswag: XLA_FFI_Metadata_Extension has size %zu, expected >= %zu",
                     me->extension_base.struct_size,
                     (size_t)XLA_FFI_Metadata_Extension_STRUCT_SIZE);
  XLA_FFI_Metadata *md = me->metadata;
  if (!md || md->struct_size < XLA_FFI_STRUCT_SIZE(XLA_FFI_Metadata, traits))
    return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "unswag: XLA_FFI_Metadata is missing or too small (%zu bytes)",
                     md ? md->struct_size : (size_t)0);
  md->api_version.struct_size = XLA_FFI_Api_Version_STRUCT_SIZE;
  md->api_version.extension_start = NULL;
  md->api_version.major_version = XLA_FFI_API_MAJOR;
  md->api_version.minor_version = XLA_FFI_API_MINOR;
  md->traits = traits;
  return NULL;
}

/* Checks shared by all handlers.  Returns an error, or NULL to go on;
 * *done is set when the call was the metadata query. */
static XLA_FFI_Error *check_frame(XLA_FFI_CallFrame *f, const char *fn, int64_t nargs,
                                  int64_t nrets, XLA_FFI_Handler_Traits traits, int *done) {
  *done = 0;
  if (f->extension_start && f->extension_start->type == XLA_FFI_Extension_Metadata) {
    *done = 1;
    return answer_metadata(f->api, f->extension_start, traits);
  }
  if (f->struct_size < XLA_FFI_CallFrame_STRUCT_SIZE)
    return ffi_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "%s: XLA_FFI_CallFrame has size %zu, expected >= %zu (jaxlib older than "
                     "the FFI header this library was built with)",
                     fn, f->struct_size, (size_t)XLA_FFI_CallFrame_STRUCT_SIZE);
  if (f->stage != XLA_FFI_ExecutionStage_EXECUTE)
    return ffi_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "%s: called in stage %d; only the execute stage is implemented", fn,
                     (int)f->stage);
  if (f->args.size != nargs || f->rets.size != nrets)
    return ffi_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "%s: expected %lld argument(s) and %lld result(s), got %lld and %lld", fn,
                     (long long)nargs, (long long)nrets, (long long)f->args.size,
                     (long long)f->rets.size);
  for (int64_t i = 0; i < nargs; ++i)
    if (f->args.types[i] != XLA_FFI_ArgType_BUFFER)
      return ffi_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                       "%s: argument %lld is not a buffer", fn, (long long)i);
  for (int64_t i = 0; i < nrets; ++i)
    if (f->rets.types[i] != XLA_FFI_RetType_BUFFER)
      return ffi_error(f->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                       "%s: result %lld is not a buffer", fn, (long long)i);
  return NULL;
}

/* ---- buffers ------------------------------------------------------------------------ */

static const char *dtype_name(XLA_FFI_DataType t) {
  switch (t) {
    case XLA_FFI_DataType_F32: return "float32";
    case XLA_FFI_DataType_F16: return "float16";
    case XLA_FFI_DataType_BF16: return "bfloat16";
    case XLA_FFI_DataType_F64: return "float64";
    case XLA_FFI_DataType_U8: return "uint8";
    case XLA_FFI_DataType_S32: return "int32";
    case XLA_FFI_DataType_S64: return "int64";
    default: return "another element type";
  }
}

static int to_unswag_dtype(XLA_FFI_DataType t, unswag_dtype *out) {
  switch (t) {
    case XLA_FFI_DataType_F32: *out = UNSWAG_F32; return 1;
    case XLA_FFI_DataType_F16: *out = UNSWAG_F16; return 1;
    case XLA_FFI_DataType_BF16: *out = UNSWAG_BF16; return 1;
    default: return 0;
  }
}

static XLA_FFI_Buffer *arg_buffer(XLA_FFI_CallFrame *f, int64_t i) {
  return (XLA_FFI_Buffer *)f->args.args[i];
}

static XLA_FFI_Buffer *ret_buffer(XLA_FFI_CallFrame *f, int64_t i) {
  return (XLA_FFI_Buffer *)f->rets.rets[i];
}

/* Element count of a buffer; 0 on overflow (reported by the caller via ok). */
static size_t element_count(const XLA_FFI_Buffer *b, int *ok) {
  size_t n = 1;
  *ok = 1;
  for (int64_t d = 0; d < b->rank; ++d) {
    if (b->dims[d] < 0) {
      *ok = 0;
      return 0;
    }
    size_t k = (size_t)b->dims[d];
    if (k != 0 && n > SIZE_MAX / k) {
      *ok = 0;
      return 0;
    }
    n *= k;
  }
  return n;
}

static int same_shape(const XLA_FFI_Buffer *a, const XLA_FFI_Buffer *b) {
  if (a->rank != b->rank) return 0;
  for (int64_t d = 0; d < a->rank; ++d)
    if (a->dims[d] != b->dims[d]) return 0;
  return 1;
}

/* ---- attributes --------------------------------------------------------------------- */

typedef struct op_attrs {
  unswag_op op;
  unswag_codebook cb; /* used when a custom codebook was passed */
} op_attrs;

static int name_is(const XLA_FFI_ByteSpan *s, const char *name) {
  size_t len = strlen(name);
  return s->len == len && memcmp(s->ptr, name, len) == 0;
}

/* NULL when attribute `name` is of kind `want`, else an error saying it must be `what`. */
static XLA_FFI_Error *attr_kind(const XLA_FFI_Api *api, const char *fn, const char *name,
                                XLA_FFI_AttrType type, XLA_FFI_AttrType want, const char *what) {
  if (type == want) return NULL;
  return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, "%s: attribute %s must be %s", fn,
                   name, what);
}

static XLA_FFI_Error *attr_dtype_error(const XLA_FFI_Api *api, const char *fn, const char *name,
                                       const char *what, XLA_FFI_DataType got) {
  return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                   "%s: attribute %s must be %s (got XLA type %d)", fn, name, what, (int)got);
}

static XLA_FFI_Error *scalar_int(const XLA_FFI_Api *api, const char *fn, const char *name,
                                 XLA_FFI_AttrType type, void *attr, int *out) {
  XLA_FFI_Error *err = attr_kind(api, fn, name, type, XLA_FFI_AttrType_SCALAR, "an integer scalar");
  if (err) return err;
  const XLA_FFI_Scalar *s = (const XLA_FFI_Scalar *)attr;
  if (s->dtype == XLA_FFI_DataType_S32) {
    *out = *(const int32_t *)s->value;
    return NULL;
  }
  if (s->dtype != XLA_FFI_DataType_S64)
    return attr_dtype_error(api, fn, name, "int32 or int64", s->dtype);
  int64_t v = *(const int64_t *)s->value;
  if (v < INT32_MIN || v > INT32_MAX)
    return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "%s: attribute %s = %lld is out of range", fn, name, (long long)v);
  *out = (int)v;
  return NULL;
}

static XLA_FFI_Error *scalar_float(const XLA_FFI_Api *api, const char *fn, const char *name,
                                   XLA_FFI_AttrType type, void *attr, float *out) {
  XLA_FFI_Error *err = attr_kind(api, fn, name, type, XLA_FFI_AttrType_SCALAR, "a float scalar");
  if (err) return err;
  const XLA_FFI_Scalar *s = (const XLA_FFI_Scalar *)attr;
  if (s->dtype == XLA_FFI_DataType_F32) *out = *(const float *)s->value;
  else if (s->dtype == XLA_FFI_DataType_F64) *out = (float)*(const double *)s->value;
  else return attr_dtype_error(api, fn, name, "float32 or float64", s->dtype);
  return NULL;
}

static XLA_FFI_Error *float_array(const XLA_FFI_Api *api, const char *fn, const char *name,
                                  XLA_FFI_AttrType type, void *attr, const float **data,
                                  size_t *size) {
  XLA_FFI_Error *err = attr_kind(api, fn, name, type, XLA_FFI_AttrType_ARRAY, "a float32 array");
  if (err) return err;
  const XLA_FFI_Array *a = (const XLA_FFI_Array *)attr;
  if (a->size > 0 && a->dtype != XLA_FFI_DataType_F32)
    return attr_dtype_error(api, fn, name, "a float32 array", a->dtype);
  *data = (const float *)a->data;
  *size = a->size;
  return NULL;
}

/* Reads the attributes into an op; validates it with the library. */
static XLA_FFI_Error *read_attrs(XLA_FFI_CallFrame *f, const char *fn, op_attrs *out) {
  const XLA_FFI_Api *api = f->api;
  memset(out, 0, sizeof *out);
  out->op = unswag_op_make(UNSWAG_RELU, 1);
  const float *bnd = NULL, *lvl = NULL;
  size_t nb = 0, nl = 0;
  int have_act = 0;
  XLA_FFI_Error *err = NULL;
  for (int64_t i = 0; i < f->attrs.size && !err; ++i) {
    const XLA_FFI_ByteSpan *name = f->attrs.names[i];
    XLA_FFI_AttrType type = f->attrs.types[i];
    void *attr = f->attrs.attrs[i];
    if (name_is(name, "act")) {
      int v = 0;
      err = scalar_int(api, fn, "act", type, attr, &v);
      out->op.act = (unswag_activation)v;
      have_act = 1;
    } else if (name_is(name, "bits")) {
      err = scalar_int(api, fn, "bits", type, attr, &out->op.bits);
    } else if (name_is(name, "slope")) {
      err = scalar_float(api, fn, "slope", type, attr, &out->op.slope);
    } else if (name_is(name, "lo")) {
      err = scalar_float(api, fn, "lo", type, attr, &out->op.lo);
    } else if (name_is(name, "hi")) {
      err = scalar_float(api, fn, "hi", type, attr, &out->op.hi);
    } else if (name_is(name, "boundaries")) {
      err = float_array(api, fn, "boundaries", type, attr, &bnd, &nb);
    } else if (name_is(name, "levels")) {
      err = float_array(api, fn, "levels", type, attr, &lvl, &nl);
    } else {
      err = ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, "%s: unknown attribute %.*s", fn,
                      (int)name->len, name->ptr);
    }
  }
  if (err) return err;
  if (!have_act)
    return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, "%s: attribute act is required", fn);
  if (nb > 0 || nl > 0) {
    int bits = out->op.bits;
    if (bits < 1 || bits > UNSWAG_MAX_BITS || nl != ((size_t)1 << bits) ||
        nb != ((size_t)1 << bits) - 1)
      return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                       "%s: a custom codebook with bits=%d needs 2^bits-1 boundaries and 2^bits "
                       "levels; got %zu and %zu",
                       fn, bits, nb, nl);
    out->cb.bits = bits;
    memcpy(out->cb.boundaries, bnd, nb * sizeof(float));
    memcpy(out->cb.levels, lvl, nl * sizeof(float));
    out->cb.rms_error = 0.0;
    out->op.codebook = &out->cb;
  }
  unswag_status s = unswag_op_validate(&out->op);
  if (s != UNSWAG_OK) return status_error(api, fn, s);
  return NULL;
}

/* ---- shape checks and the row loop ------------------------------------------------- */

typedef struct plan {
  unswag_dtype dtype;
  size_t n;         /* all elements                        */
  size_t rows;      /* product of the leading dims          */
  size_t row_len;   /* last dim (1 for rank 0)              */
  size_t row_bytes; /* code bytes of one row                */
  size_t es;        /* element size                         */
} plan;

/* data: the float operand (x or dy); other: the float result/operand that
 * must match it (y or dx); codes: the uint8 buffer. */
static XLA_FFI_Error *make_plan(const XLA_FFI_Api *api, const char *fn, const unswag_op *op,
                                const XLA_FFI_Buffer *data, const char *data_name,
                                const XLA_FFI_Buffer *other, const char *other_name,
                                const XLA_FFI_Buffer *codes, plan *p) {
  if (!to_unswag_dtype(data->dtype, &p->dtype))
    return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "%s: %s has dtype %s; unswag supports float32, float16 and bfloat16", fn,
                     data_name, dtype_name(data->dtype));
  if (other->dtype != data->dtype || !same_shape(other, data))
    return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "%s: %s must have the dtype and shape of %s", fn, other_name, data_name);
  if (codes->dtype != XLA_FFI_DataType_U8)
    return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, "%s: codes must be uint8, got %s",
                     fn, dtype_name(codes->dtype));
  int ok = 1, ok2 = 1;
  p->n = element_count(data, &ok);
  size_t ncodes = element_count(codes, &ok2);
  if (!ok || !ok2)
    return ffi_error(api, XLA_FFI_Error_Code_OUT_OF_RANGE, "%s: buffer size overflows", fn);
  p->row_len = data->rank > 0 ? (size_t)data->dims[data->rank - 1] : 1;
  p->rows = p->row_len ? p->n / p->row_len : 0;
  p->es = unswag_dtype_size(p->dtype);
  unswag_status s = unswag_code_bytes(p->row_len, op->bits, &p->row_bytes);
  if (s != UNSWAG_OK) return status_error(api, fn, s);
  if (p->rows != 0 && p->row_bytes > SIZE_MAX / p->rows)
    return ffi_error(api, XLA_FFI_Error_Code_OUT_OF_RANGE, "%s: code size overflows", fn);
  if (ncodes != p->rows * p->row_bytes)
    return ffi_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "%s: codes has %zu bytes; %zu row(s) of %zu element(s) at %d bit(s) need "
                     "%zu",
                     fn, ncodes, p->rows, p->row_len, op->bits, p->rows * p->row_bytes);
  return NULL;
}

/* Rows are contiguous in the code buffer iff each row ends on a byte. */
static int rows_contiguous(const plan *p, int bits) {
  return p->rows <= 1 || (p->row_len * (size_t)bits) % 8 == 0;
}

typedef unswag_status (*fwd_call)(const unswag_op *op, unswag_dtype dt, const void *x, void *y,
                                  uint8_t *codes, size_t n, void *stream);
typedef unswag_status (*bwd_call)(const unswag_op *op, unswag_dtype dt, const void *dy,
                                  const uint8_t *codes, void *dx, size_t n, void *stream);

/* XLA:CPU runs its threads with denormals flushed (FTZ/DAZ on x86, FZ on
 * Arm).  The codes contract (docs/design.md section 2) is IEEE: a subnormal x > 0
 * has code 1 and the same bytes as every other backend.  So the CPU handlers
 * run the kernels with the default floating-point environment and restore
 * XLA's afterwards. */
typedef struct fp_env {
#if defined(UNSWAG_JAX_X86_CSR)
  unsigned int csr;
#elif defined(__aarch64__)
  uint64_t fpcr;
#else
  int unused;
#endif
} fp_env;

static void fp_ieee_enter(fp_env *e) {
#if defined(UNSWAG_JAX_X86_CSR)
  e->csr = _mm_getcsr();
  _mm_setcsr(e->csr & ~(0x8000u /* FTZ */ | 0x0040u /* DAZ */));
#elif defined(__aarch64__)
  uint64_t v;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
  e->fpcr = v;
  v &= ~(((uint64_t)1 << 24) /* FZ */ | ((uint64_t)1 << 19) /* FZ16 */);
  __asm__ __volatile__("msr fpcr, %0" : : "r"(v));
#else
  (void)e;
#endif
}

static void fp_ieee_leave(const fp_env *e) {
#if defined(UNSWAG_JAX_X86_CSR)
  _mm_setcsr(e->csr);
#elif defined(__aarch64__)
  __asm__ __volatile__("msr fpcr, %0" : : "r"(e->fpcr));
#else
  (void)e;
#endif
}

/* One kernel call: forward (fwd set) or backward (bwd set), on buffers make_plan checked. */
typedef struct act_call {
  fwd_call fwd;
  bwd_call bwd;
  const unswag_op *op;
  unswag_dtype dtype;
  const uint8_t *in; /* x or dy */
  uint8_t *out;      /* y or dx */
  uint8_t *codes;    /* written forward, read backward */
  void *stream;
  int ieee; /* CPU: run in the default floating-point environment (fp_ieee_enter) */
} act_call;

/* n elements from element offset off (bytes) and code offset code_off. */
static unswag_status call_span(const act_call *c, size_t off, size_t code_off, size_t n) {
  fp_env e;
  memset(&e, 0, sizeof e);
  if (c->ieee) fp_ieee_enter(&e);
  const unswag_status s =
      c->fwd
          ? c->fwd(c->op, c->dtype, c->in + off, c->out + off, c->codes + code_off, n, c->stream)
          : c->bwd(c->op, c->dtype, c->in + off, c->codes + code_off, c->out + off, n, c->stream);
  if (c->ieee) fp_ieee_leave(&e);
  return s;
}

/* The library's CUDA entry points only queue kernels on the given stream: no
 * allocation, no copy, no synchronisation; their pointer and device queries are
 * legal during stream capture (tests/gpu/test_cuda.c captures a graph).  So the
 * handlers let XLA record them into its command buffers (CUDA graphs): the handler
 * then runs when XLA records the graph, not on every execution, and its host cost
 * (attribute parsing, checks, launch) leaves the step. */
#define CUDA_TRAITS XLA_FFI_HANDLER_TRAITS_COMMAND_BUFFER_COMPATIBLE

static XLA_FFI_Error *get_stream(XLA_FFI_CallFrame *f, const char *fn, void **stream) {
  XLA_FFI_Stream_Get_Args args;
  memset(&args, 0, sizeof args);
  args.struct_size = XLA_FFI_Stream_Get_Args_STRUCT_SIZE;
  args.extension_start = NULL;
  args.ctx = f->ctx;
  args.stream = NULL;
  XLA_FFI_Error *err = f->api->XLA_FFI_Stream_Get(&args);
  if (err) return err;
  if (!args.stream)
    return ffi_error(f->api, XLA_FFI_Error_Code_FAILED_PRECONDITION, "%s: XLA gave no CUDA stream",
                     fn);
  *stream = args.stream;
  return NULL;
}

/* A handler's work.  Forward: x -> (y, codes); backward: (dy, codes) -> dx.
 * The frame (a metadata query ends here), XLA's stream (cuda), the attributes,
 * then one kernel call when the rows' codes are contiguous, else one a row. */
static XLA_FFI_Error *handle(XLA_FFI_CallFrame *f, const char *fn, fwd_call fwd, bwd_call bwd,
                             int cuda) {
  int done;
  XLA_FFI_Error *err = check_frame(f, fn, fwd ? 1 : 2, fwd ? 2 : 1, cuda ? CUDA_TRAITS : 0, &done);
  if (err || done) return err;
  void *stream = NULL;
  if (cuda && (err = get_stream(f, fn, &stream))) return err;
  op_attrs a;
  if ((err = read_attrs(f, fn, &a))) return err;
  XLA_FFI_Buffer *in = arg_buffer(f, 0), *out = ret_buffer(f, 0);
  XLA_FFI_Buffer *codes = fwd ? ret_buffer(f, 1) : arg_buffer(f, 1);
  plan p;
  if ((err = make_plan(f->api, fn, &a.op, in, fwd ? "x" : "dy", out, fwd ? "y" : "dx", codes, &p)))
    return err;
  if (p.n == 0) return NULL;
  const act_call c = {.fwd = fwd,
                      .bwd = bwd,
                      .op = &a.op,
                      .dtype = p.dtype,
                      .in = in->data,
                      .out = out->data,
                      .codes = codes->data,
                      .stream = stream,
                      .ieee = !cuda};
  if (rows_contiguous(&p, a.op.bits)) {
    unswag_status s = call_span(&c, 0, 0, p.n);
    return s == UNSWAG_OK ? NULL : status_error(f->api, fn, s);
  }
  for (size_t r = 0; r < p.rows; ++r) {
    unswag_status s = call_span(&c, r * p.row_len * p.es, r * p.row_bytes, p.row_len);
    if (s != UNSWAG_OK) return status_error(f->api, fn, s);
  }
  return NULL;
}

/* ---- CPU handlers -------------------------------------------------------------------- */

/* The library's default CPU path: vectorised, threaded when n is large.  The
 * handler used to run one thread, because the library's OpenMP workers once
 * spun against XLA's threads (10x slower calls on a 2-core machine); with the
 * library's own sleeping pool (and OpenMP only as the process's team) that is
 * gone: on a 2-core VM, 2^24 elements, fwd + bwd under one jit, threads took
 * relu bf16 from 0.58x to 0.96x of jax.nn and silu/4 bf16 from 0.88x to 1.35x,
 * and no MLP step got slower (bench/results/cpu-jax-2core-2026-11-30.txt). */
static const unswag_cpu_options cpu_opts = {UNSWAG_PATH_AUTO, 0};

static unswag_status cpu_forward(const unswag_op *op, unswag_dtype dt, const void *x, void *y,
                                 uint8_t *codes, size_t n, void *stream) {
  (void)stream;
  return unswag_forward_advanced(op, dt, x, y, codes, n, &cpu_opts);
}

static unswag_status cpu_backward(const unswag_op *op, unswag_dtype dt, const void *dy,
                                  const uint8_t *codes, void *dx, size_t n, void *stream) {
  (void)stream;
  return unswag_backward_advanced(op, dt, dy, codes, dx, n, &cpu_opts);
}

UNSWAG_JAX_API XLA_FFI_Error *unswag_jax_forward_cpu(XLA_FFI_CallFrame *f) {
  return handle(f, "unswag_jax_forward_cpu", cpu_forward, NULL, 0);
}

UNSWAG_JAX_API XLA_FFI_Error *unswag_jax_backward_cpu(XLA_FFI_CallFrame *f) {
  return handle(f, "unswag_jax_backward_cpu", NULL, cpu_backward, 0);
}

/* ---- CUDA handlers ------------------------------------------------------------------- */

#ifdef UNSWAG_JAX_WITH_CUDA

UNSWAG_JAX_API XLA_FFI_Error *unswag_jax_forward_cuda(XLA_FFI_CallFrame *f) {
  return handle(f, "unswag_jax_forward_cuda", unswag_forward_cuda, NULL, 1);
}

UNSWAG_JAX_API XLA_FFI_Error *unswag_jax_backward_cuda(XLA_FFI_CallFrame *f) {
  return handle(f, "unswag_jax_backward_cuda", NULL, unswag_backward_cuda, 1);
}

UNSWAG_JAX_API int unswag_jax_cuda_handlers(void) { return 1; }

#else

UNSWAG_JAX_API int unswag_jax_cuda_handlers(void) { return 0; }

#endif

/* The FFI API version of the header this library was compiled with. */
UNSWAG_JAX_API int unswag_jax_ffi_api_version(void) {
  return XLA_FFI_API_MAJOR * 1000 + XLA_FFI_API_MINOR;
}

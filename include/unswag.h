/*
 * unswag.h - the public C API of libunswag.
 *
 * Forward: y = f(x).  The relu family is exact (a select).  silu/gelu:
 * fp32 is computed in float-float arithmetic and rounded once to float (within 1 ulp of the correctly rounded
 * value; it can differ from a framework's float formula by 1 ulp); fp16/bf16 are computed in float with the library's own exp/erfc
 * and rounded once (within 1 ulp of correctly rounded, checked on all 65,536
 * inputs).  Instead of x, a k-bit code of x is kept for backward.
 * Backward: dx = dy * level[code].  Exact for the relu family (1 bit);
 * an L2-optimal piecewise-constant approximation of f' for silu/gelu.
 *
 * Conventions (see docs/design.md):
 *  - every call returns an unswag_status; UNSWAG_OK is 0;
 *  - on error no output byte is written;
 *  - tensors are raw pointers + element count + dtype; no call allocates,
 *    locks or touches global mutable state on the hot path;
 *  - CUDA entry points take the stream as void* and never allocate,
 *    synchronise or copy to the host.
 */
#ifndef UNSWAG_H
#define UNSWAG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UNSWAG_VERSION_MAJOR 0
#define UNSWAG_VERSION_MINOR 2
#define UNSWAG_VERSION_PATCH 0
#define UNSWAG_VERSION_NUMBER \
  (UNSWAG_VERSION_MAJOR * 10000 + UNSWAG_VERSION_MINOR * 100 + UNSWAG_VERSION_PATCH)

#if defined(_WIN32) && defined(UNSWAG_BUILDING_SHARED)
#define UNSWAG_API __declspec(dllexport)
#elif defined(__GNUC__)
#define UNSWAG_API __attribute__((visibility("default")))
#else
#define UNSWAG_API
#endif

/* ---- status ------------------------------------------------------------ */

typedef enum unswag_status {
  UNSWAG_OK = 0,
  UNSWAG_ERR_NULL_POINTER = 1,    /* a required pointer is NULL (n > 0) */
  UNSWAG_ERR_SIZE_OVERFLOW = 2,   /* a byte count would overflow size_t */
  UNSWAG_ERR_BAD_DTYPE = 3,       /* unknown dtype */
  UNSWAG_ERR_BAD_ACTIVATION = 4,  /* unknown activation */
  UNSWAG_ERR_BAD_BITS = 5,        /* bits not valid for this activation */
  UNSWAG_ERR_BAD_PARAM = 6,       /* e.g. hardtanh lo >= hi, NaN slope */
  UNSWAG_ERR_BAD_CODEBOOK = 7,    /* unsorted / non-finite codebook */
  UNSWAG_ERR_NO_MEMORY = 8,       /* the codebook fitter could not allocate */
  UNSWAG_ERR_CUDA_NOT_BUILT = 9,  /* library built without CUDA */
  UNSWAG_ERR_CUDA_NO_DEVICE = 10, /* CUDA built, but no usable device */
  UNSWAG_ERR_CUDA_LAUNCH = 11,    /* a CUDA launch failed */
  UNSWAG_ERR_BAD_POINTER = 12,    /* pointer not usable on this device */
  UNSWAG_STATUS_COUNT_ = 13
} unswag_status;

/* Static name of a status, e.g. "UNSWAG_ERR_BAD_BITS: bits not valid ...". */
UNSWAG_API const char *unswag_status_string(unswag_status status);

/* Detail of the last error raised on the calling thread ("" if none). */
UNSWAG_API const char *unswag_last_error(void);

UNSWAG_API int unswag_version(void);                /* UNSWAG_VERSION_NUMBER */
UNSWAG_API const char *unswag_version_string(void); /* e.g. "0.2.0" */

/* ---- element types -------------------------------------------------------- */

typedef enum unswag_dtype {
  UNSWAG_F32 = 0,
  UNSWAG_F16 = 1,
  UNSWAG_BF16 = 2,
  UNSWAG_DTYPE_COUNT_ = 3
} unswag_dtype;

/* Bytes per element, or 0 for an unknown dtype. */
UNSWAG_API size_t unswag_dtype_size(unswag_dtype dtype);

/* Conversions (round to nearest even; NaN stays NaN, Inf stays Inf,
 * subnormals kept).  Exposed so bindings and tests agree bit for bit. */
UNSWAG_API float unswag_f16_to_f32(uint16_t h);
UNSWAG_API uint16_t unswag_f32_to_f16(float f);
UNSWAG_API float unswag_bf16_to_f32(uint16_t b);
UNSWAG_API uint16_t unswag_f32_to_bf16(float f);

/* ---- activations ------------------------------------------------------------ */

typedef enum unswag_activation {
  /* exact family: 1 bit, gradient exact */
  UNSWAG_RELU = 0,
  UNSWAG_LEAKY_RELU = 1, /* param slope */
  UNSWAG_RELU6 = 2,
  UNSWAG_HARDTANH = 3, /* params lo < hi */
  /* smooth: k in {1,2,4,8}, codebook approximation of f' */
  UNSWAG_SILU = 4,
  UNSWAG_GELU = 5,      /* erf form */
  UNSWAG_GELU_TANH = 6, /* tanh approximation */
  UNSWAG_ACTIVATION_COUNT_ = 7
} unswag_activation;

/* Name ("relu", "gelu_tanh", ...) or NULL for an unknown activation. */
UNSWAG_API const char *unswag_activation_name(unswag_activation act);

/* 1 for the exact (relu) family, 0 for smooth activations, -1 if unknown. */
UNSWAG_API int unswag_activation_is_exact(unswag_activation act);

#define UNSWAG_MAX_BITS 8
#define UNSWAG_MAX_LEVELS 256

/* A piecewise-constant approximation of f' with 2^bits pieces.
 * code(x) = number of boundaries b_j with x > b_j (NaN -> 0). */
typedef struct unswag_codebook {
  int bits;                                /* 1, 2, 4 or 8 */
  float boundaries[UNSWAG_MAX_LEVELS - 1]; /* 2^bits - 1 used, increasing */
  float levels[UNSWAG_MAX_LEVELS];         /* 2^bits used */
  double rms_error;                        /* weighted RMS of f' - q under the fit's weighting */
} unswag_codebook;

/* How a smooth activation's forward chooses its codes (docs/design.md, section 2).
 * DETERMINISTIC: code(x) by the codebook's boundaries, backward level = the piece's
 *   level (biased: the L2-optimal piecewise-constant f').
 * STOCHASTIC: d = f'(x) in float; the levels are the uniform grid of 2^bits values
 *   from min f' to max f' of the activation (unswag_stochastic_levels); the code is
 *   the index j or j + 1 of the two levels l_j <= d <= l_{j+1}, j + 1 with probability
 *   (d - l_j) / (l_{j+1} - l_j), so E[level[code]] = f'(x).  The random number of
 *   element i is a counter-based hash of (seed, i): the codes depend only on seed and
 *   the data, the same bytes on every CPU thread split and on CUDA.  Backward is
 *   unchanged: dx = dy * level[code].  silu, gelu, gelu_tanh only; codebook NULL. */
typedef enum unswag_code_kind {
  UNSWAG_CODES_DETERMINISTIC = 0,
  UNSWAG_CODES_STOCHASTIC = 1,
  UNSWAG_CODE_KIND_COUNT_ = 2
} unswag_code_kind;

/* What one forward/backward pair computes.  Zero-initialise, then set.
 * code_kind and seed were added at the end: a zeroed op is today's
 * deterministic behaviour (source compatible; callers built against an older
 * header must be rebuilt, the struct grew). */
typedef struct unswag_op {
  unswag_activation act;
  int bits;                        /* 1 for exact family; 1,2,4,8 smooth */
  float slope;                     /* leaky_relu negative slope (finite) */
  float lo, hi;                    /* hardtanh bounds (finite, lo < hi) */
  const unswag_codebook *codebook; /* smooth only; NULL = built-in table */
  unswag_code_kind code_kind;      /* 0 = deterministic; stochastic: smooth, codebook NULL */
  uint64_t seed;                   /* stochastic: the random stream (forward only) */
} unswag_op;

/* Convenience initialisers (defaults: slope 0.01, hardtanh [-1, 1]). */
UNSWAG_API unswag_op unswag_op_make(unswag_activation act, int bits);

/* Checks an op: returns the status a kernel call with it would return.
 * Stochastic codes: on the relu family UNSWAG_ERR_BAD_ACTIVATION, with a
 * codebook UNSWAG_ERR_BAD_CODEBOOK; an unknown code_kind UNSWAG_ERR_BAD_PARAM. */
UNSWAG_API unswag_status unswag_op_validate(const unswag_op *op);

/* ---- code buffers ----------------------------------------------------------- */

/* ceil(n * bits / 8): the code buffer size.  UNSWAG_ERR_SIZE_OVERFLOW if
 * that or n * sizeof(element) cannot be represented. */
UNSWAG_API unswag_status unswag_code_bytes(size_t n, int bits, size_t *out_bytes);

/* ---- codebooks -------------------------------------------------------------- */

/* The built-in codebook of a smooth activation at k bits (fitted under a
 * standard normal weighting; see unswag_codebook_fit). */
UNSWAG_API unswag_status unswag_codebook_builtin(unswag_activation act, int bits,
                                                 unswag_codebook *out);

/* Checks bits, finiteness and strictly increasing boundaries. */
UNSWAG_API unswag_status unswag_codebook_validate(const unswag_codebook *cb);

/* A derivative to approximate: returns f'(x). */
typedef double (*unswag_derivative_fn)(double x, void *user);

/* Exact derivative of a built-in smooth activation (for fits and tests). */
UNSWAG_API double unswag_derivative(unswag_activation act, double x);

/* The levels of stochastic codes of a smooth activation at k bits:
 * levels[j] = float(lo + j (hi - lo) / (2^bits - 1)), j < 2^bits, with lo, hi
 * = min f', max f' (silu: -0.0998393, 1.0998393 at x = -+2.39936; gelu:
 * -0.1289041, 1.1289041 at -+sqrt 2; gelu_tanh: -0.1289931, 1.1289931 at
 * -+1.41850).  levels: room for 2^bits floats.  UNSWAG_ERR_BAD_ACTIVATION for
 * the exact family. */
UNSWAG_API unswag_status unswag_stochastic_levels(unswag_activation act, int bits, float *levels);

/* Weighting of the L2 fit.  If hist_counts is NULL: normal(0, sigma)
 * density.  Otherwise a histogram of observed inputs: hist_bins counts
 * over equal bins of [hist_lo, hist_hi] (mass outside is ignored). */
typedef struct unswag_fit_options {
  double sigma;              /* > 0; 0 means 1.0 */
  const double *hist_counts; /* optional histogram (non-negative, sum > 0) */
  size_t hist_bins;
  double hist_lo, hist_hi;
  /* 0 means default (8192); at most 4194304 at 1 bit, 65536 at 2, 32768 at
   * 4, 8192 at 8 bits (bounds the fit's time), else UNSWAG_ERR_BAD_PARAM */
  size_t grid_cells;
  double range; /* grid covers [-range, range]; 0: 16*sigma or the histogram range */
} unswag_fit_options;

/* L2-optimal piecewise-constant approximation with 2^bits pieces of
 * deriv(x) under the weighting of opts (NULL = standard normal): dynamic
 * programming over grid cells (global optimum on the grid), levels =
 * weighted interval means, rms_error = weighted RMS error.  Allocates
 * scratch memory (not a hot-path call). */
UNSWAG_API unswag_status unswag_codebook_fit(unswag_derivative_fn deriv, void *user, int bits,
                                             const unswag_fit_options *opts, unswag_codebook *out);

/* ---- CPU kernels ------------------------------------------------------------ */

/* forward: y[i] = f(x[i]) in dtype; codes = packed ceil(n*bits/8) bytes.
 * backward: dx[i] = dy[i] * level[code_i] (exact family: select, bitwise
 * equal to the framework's backward).  x may alias y, dy may alias dx. */
UNSWAG_API unswag_status unswag_forward(const unswag_op *op, unswag_dtype dtype, const void *x,
                                        void *y, uint8_t *codes, size_t n);
UNSWAG_API unswag_status unswag_backward(const unswag_op *op, unswag_dtype dtype, const void *dy,
                                         const uint8_t *codes, void *dx, size_t n);

typedef enum unswag_cpu_path {
  UNSWAG_PATH_AUTO = 0,     /* vectorised, threaded when n is large */
  UNSWAG_PATH_SCALAR = 1,   /* plain scalar loop (the reference kernel) */
  UNSWAG_PATH_VECTOR = 2,   /* vectorised, one thread */
  UNSWAG_PATH_THREADED = 3, /* vectorised, num_threads threads */
  UNSWAG_PATH_COUNT_ = 4
} unswag_cpu_path;

typedef struct unswag_cpu_options {
  unswag_cpu_path path;
  int num_threads; /* 0 = the machine's cores; capped at the core count */
} unswag_cpu_options;

UNSWAG_API unswag_status unswag_forward_advanced(const unswag_op *op, unswag_dtype dtype,
                                                 const void *x, void *y, uint8_t *codes, size_t n,
                                                 const unswag_cpu_options *opts);
UNSWAG_API unswag_status unswag_backward_advanced(const unswag_op *op, unswag_dtype dtype,
                                                  const void *dy, const uint8_t *codes, void *dx,
                                                  size_t n, const unswag_cpu_options *opts);

/* ---- gated MLP elementwise part (SwiGLU / GeGLU) ----------------------------- */

/* h = act(g) * u, act in {UNSWAG_SILU, UNSWAG_GELU, UNSWAG_GELU_TANH},
 * computed in fp32 (fp32 dtype: double) with one rounding to dtype.
 * Nothing approximated: the gated paths keep g and u (or recompute them). */
UNSWAG_API unswag_status unswag_gated_forward(unswag_activation act, unswag_dtype dtype,
                                              const void *g, const void *u, void *h, size_t n);
/* dg = dh * u * act'(g), du = dh * act(g) (exact derivative, fp32 math,
 * one rounding each).  dg may alias g, du may alias u. */
UNSWAG_API unswag_status unswag_gated_backward(unswag_activation act, unswag_dtype dtype,
                                               const void *dh, const void *g, const void *u,
                                               void *dg, void *du, size_t n);

/* ---- RMSNorm (Llama, Mistral, Qwen2, Qwen3) ------------------------------------ */

/* Per row of `cols` elements (row r at x + r * cols; rows contiguous), the
 * Hugging Face LlamaRMSNorm, with the rounding it does (docs/rmsnorm.md):
 *   rstd[r] = 1 / sqrt(mean(float(x)^2) + eps)       fp32, one per row
 *   n       = round_to_dtype(float(x) * rstd[r])
 *   y       = round_to_dtype(float(w) * float(n))
 * The row sum runs in a fixed order (256 lanes of 8-element groups, then a
 * tree) in fp32 (fp32 dtype: in double), the same on the CPU and on CUDA, so
 * y, rstd and dx are the same bytes on both.  Backward needs only x and rstd
 * (no fp32 copy of the activations).  A row with a NaN gives NaN; a row whose
 * sum of squares overflows (only possible for bf16) gives rstd 0.
 *
 * weight_offset: 0 (Llama); any other value is UNSWAG_ERR_BAD_PARAM for now.
 * eps: finite and >= 0.  cols > 0 when rows > 0.  y may be x (the same
 * pointer); no other overlap between an output and any buffer is allowed.
 * Computed NaNs are the canonical quiet NaN of the dtype (rstd: of fp32). */
UNSWAG_API unswag_status unswag_rmsnorm_forward(unswag_dtype dtype, const void *x, const void *w,
                                                void *y, float *rstd, size_t rows, size_t cols,
                                                float eps, float weight_offset);

/* Given dy, x, w and the forward's rstd (per row, in fp32 math):
 *   g  = float(dy) * float(w),  nf = float(x) * rstd
 *   dx = round_to_dtype(rstd * (g - nf * mean(g * nf)))
 *   dw_accum[j] += sum over rows of float(dy) * float(n)   (n as in forward)
 * dw_accum (cols fp32 values) is ADDED to, so tiles of rows can accumulate
 * into one buffer; zero it before the first tile.  The column sums run in
 * a fixed order (chunks of rows, see unswag_rmsnorm_workspace_bytes),
 * identical on the CPU and on CUDA.  dx may be dy (the same pointer); no
 * other overlap is allowed. */
UNSWAG_API unswag_status unswag_rmsnorm_backward(unswag_dtype dtype, const void *dy, const void *x,
                                                 const void *w, const float *rstd, void *dx,
                                                 float *dw_accum, size_t rows, size_t cols,
                                                 float weight_offset);

/* Bytes of device workspace unswag_rmsnorm_backward_cuda needs for a call of
 * (rows, cols): the fp32 column sums of each chunk of rows, at most 512
 * chunks (0 for rows == 0).  UNSWAG_ERR_SIZE_OVERFLOW if not representable. */
UNSWAG_API unswag_status unswag_rmsnorm_workspace_bytes(size_t rows, size_t cols,
                                                        size_t *out_bytes);

/* ---- CUDA kernels ----------------------------------------------------------- */

/* 1 if the library was built with CUDA, else 0. */
UNSWAG_API int unswag_cuda_built(void);

/* Same semantics as the CPU calls; pointers are device pointers, the work
 * is queued on `stream` (a cudaStream_t, NULL = legacy default stream). */
UNSWAG_API unswag_status unswag_forward_cuda(const unswag_op *op, unswag_dtype dtype, const void *x,
                                             void *y, uint8_t *codes, size_t n, void *stream);
UNSWAG_API unswag_status unswag_backward_cuda(const unswag_op *op, unswag_dtype dtype,
                                              const void *dy, const uint8_t *codes, void *dx,
                                              size_t n, void *stream);
UNSWAG_API unswag_status unswag_gated_forward_cuda(unswag_activation act, unswag_dtype dtype,
                                                   const void *g, const void *u, void *h, size_t n,
                                                   void *stream);
UNSWAG_API unswag_status unswag_gated_backward_cuda(unswag_activation act, unswag_dtype dtype,
                                                    const void *dh, const void *g, const void *u,
                                                    void *dg, void *du, size_t n, void *stream);

/* RMSNorm on CUDA: the CPU calls' semantics and bytes.  The backward takes a
 * caller-provided device workspace of at least unswag_rmsnorm_workspace_bytes
 * (no allocation; deterministic, no atomics: a second kernel adds the chunks'
 * column sums in order into dw_accum). */
UNSWAG_API unswag_status unswag_rmsnorm_forward_cuda(unswag_dtype dtype, const void *x,
                                                     const void *w, void *y, float *rstd,
                                                     size_t rows, size_t cols, float eps,
                                                     float weight_offset, void *stream);
UNSWAG_API unswag_status unswag_rmsnorm_backward_cuda(unswag_dtype dtype, const void *dy,
                                                      const void *x, const void *w,
                                                      const float *rstd, void *dx, float *dw_accum,
                                                      void *workspace, size_t workspace_bytes,
                                                      size_t rows, size_t cols, float weight_offset,
                                                      void *stream);

#ifdef __cplusplus
}
#endif

#endif /* UNSWAG_H */

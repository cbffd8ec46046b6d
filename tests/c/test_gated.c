/* Gated MLP kernel tests (h = act(g) * u and its backward) against a plain
 * double reference (libm):
 *  - fp16 / bf16: all 65,536 bit patterns of g, random u and dh;
 *  - fp32: 10^6 random values plus specials (the fp32 path computes in double);
 *  - the library's bytes equal the shared element math (gated_math.h) run
 *    one element at a time, so the vectorised, AVX2 and threaded loops add
 *    nothing of their own;
 *  - in place (dg == g, du == u; h == g, h == u) gives the same bytes;
 *  - every n from 0 to 300 at unaligned offsets, guard bytes untouched;
 *  - a threaded call (n >= 2^18) equals single-threaded calls on its pieces;
 *  - bad input returns its status and leaves every output byte untouched.
 *
 * Tolerances.  h and du: within 1 ulp of the correctly rounded reference.
 * dg: within 1 ulp too, with one exception, where an ulp comparison says
 * nothing: act'(g) has one zero (silu near -1.2785, gelu and gelu_tanh near
 * -0.7518), and next to it act' is a difference of two terms of size ~0.2
 * that cancel, so its float value carries an absolute error of ~1e-8 that
 * is large relative to act' itself.  For |g - zero| < 2^-5 only, dg may
 * instead be within 1 ulp (of the dtype at the reference) plus
 * |dh * u| * 2^-22 (16-bit dtypes, float math) or |dh * u| * 2^-48 (fp32,
 * double math) of the unrounded reference.  The test also prints the worst
 * absolute error of act' seen there, against those bounds, and checks act'
 * alone elsewhere: relative error <= 2^-16 (float; measured <= 2^-17) or
 * 2^-40 (double), far under an ulp of the outputs.
 *
 * Inputs u and dh of the 16-bit sweeps have magnitudes in [2^-8, 2^8]
 * (fp16) and [2^-4, 2^4] (bf16), or are zero.  Float math has full
 * precision there; outside it a product like dh * u * act'(g) can leave
 * float's normal range while the 16-bit result does not (bf16 shares
 * float's exponent range), which is float arithmetic, not a kernel error.
 * fp32 inputs are unrestricted (any bit pattern), since double has the range. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "cpu_variant.h"
#include "test_data.h"
#include "gated_math.h"
#include "reference.h"
#include "unswag.h"

#define UNSWAG_PI 3.14159265358979323846

#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

static const unswag_activation ACTS[] = {UNSWAG_SILU, UNSWAG_GELU, UNSWAG_GELU_TANH};
static const unswag_dtype DTYPES[] = {UNSWAG_F32, UNSWAG_F16, UNSWAG_BF16};
static const char *DT_NAMES[] = {"f32", "f16", "bf16"};

/* ---- buffers of any dtype ------------------------------------------------------ */

static uint32_t get_bits(unswag_dtype dt, const void *buf, size_t i) {
  return ref_bits(dt, buf, i);
}

static double decode(unswag_dtype dt, uint32_t b) {
  unsigned char tmp[4];
  put_bits(dt, tmp, 0, b);
  return ref_load(dt, tmp, 0);
}

/* The spacing of dt at |v| (the gap to the next larger magnitude; the gap
 * below for the largest finite value and beyond). */
static double ulp_at(unswag_dtype dt, double v) {
  const uint32_t inf = dt == UNSWAG_F32 ? 0x7F800000u : dt == UNSWAG_F16 ? 0x7C00u : 0x7F80u;
  uint32_t b = ref_round_bits(dt, fabs(v));
  if (b >= inf - 1) return decode(dt, inf - 1) - decode(dt, inf - 2);
  return decode(dt, b + 1) - decode(dt, b);
}

/* ---- the double reference -------------------------------------------------------- */

static double ref_act(unswag_activation act, double g) {
  unswag_op op = unswag_op_make(act, 1);
  return ref_activation(&op, g); /* reference.c: libm, double */
}

/* act'(g) in double; NaN at +-Inf (as PyTorch's backward gives). */
static double ref_grad(unswag_activation act, double g) {
  if (isinf(g) || isnan(g)) return NAN;
  if (act == UNSWAG_SILU) {
    double s = 1.0 / (1.0 + exp(-g));
    return s * (1.0 + g * (1.0 - s));
  }
  if (act == UNSWAG_GELU) {
    double cdf = 0.5 * erfc(-g / sqrt(2.0));
    double pdf = exp(-0.5 * g * g) / sqrt(2.0 * UNSWAG_PI);
    return cdf + g * pdf;
  }
  /* 0.5 g (1 + tanh(w)) = g sigmoid(2w): derivative s + g s (1 - s) 2w' */
  double c = sqrt(2.0 / UNSWAG_PI);
  double w2 = 2.0 * c * (g + 0.044715 * g * g * g);
  double s = 1.0 / (1.0 + exp(-w2));
  double one_minus_s = 1.0 / (1.0 + exp(w2));
  double w2p = 2.0 * c * (1.0 + 3.0 * 0.044715 * g * g);
  return s + g * s * one_minus_s * w2p;
}

/* The zero of act' (bisection on the reference, once per activation). */
static double grad_zero(unswag_activation act) {
  double lo = act == UNSWAG_SILU ? -2.0 : -1.0, hi = act == UNSWAG_SILU ? -1.0 : -0.5;
  for (int i = 0; i < 200; ++i) {
    double mid = 0.5 * (lo + hi);
    if (ref_grad(act, mid) < 0) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

#define NEAR_ZERO_WIDTH 0x1.0p-5
#define DG_TOL_16 0x1.0p-22
#define DG_TOL_32 0x1.0p-48
/* act' away from its zero (|act'| > 2^-100, float; > 2^-1000, double) */
#define GRAD_REL_16 0x1.0p-16
#define GRAD_REL_32 0x1.0p-40

/* worst |act'_lib - act'_ref| seen near the zeros, per precision */
static double worst_near_zero[2];
static long near_zero_fallbacks;

/* dg as the header comment says: 1 ulp, or near the zero of act' an
 * absolute bound of 1 ulp + |dh u| * tol. */
static int dg_ok(unswag_dtype dt, uint32_t got, double ref, double dhu, int near_zero) {
  if (ref_ulp_diff(dt, got, ref_round_bits(dt, ref)) <= 1) return 1;
  if (!near_zero || isnan(ref)) return 0;
  double tol = dt == UNSWAG_F32 ? DG_TOL_32 : DG_TOL_16;
  ++near_zero_fallbacks;
  return fabs(decode(dt, got) - ref) <= ulp_at(dt, ref) + fabs(dhu) * tol;
}

/* NaN outputs are the one positive quiet NaN of the dtype. */
static int nan_canonical(unswag_dtype dt, uint32_t b) {
  if (dt == UNSWAG_F32) return !((b & 0x7FFFFFFFu) > 0x7F800000u) || b == 0x7FC00000u;
  if (dt == UNSWAG_F16) return !((b & 0x7FFFu) > 0x7C00u) || b == 0x7E00u;
  return !((b & 0x7FFFu) > 0x7F80u) || b == 0x7FC0u;
}

/* ---- the shared element math, one element at a time (not vectorised) ------------- */

NOINLINE static uint32_t one_fwd(unswag_activation act, unswag_dtype dt, uint32_t g, uint32_t u) {
  if (dt == UNSWAG_F32) return us_gated_fwd32(act, g, u);
  return us_gated_fwd16(act, dt == UNSWAG_BF16, (uint16_t)g, (uint16_t)u);
}

NOINLINE static void one_bwd(unswag_activation act, unswag_dtype dt, uint32_t dh, uint32_t g,
                             uint32_t u, uint32_t *dg, uint32_t *du) {
  if (dt == UNSWAG_F32) {
    us_gated_bwd32(act, dh, g, u, dg, du);
    return;
  }
  uint16_t a, b;
  us_gated_bwd16(act, dt == UNSWAG_BF16, (uint16_t)dh, (uint16_t)g, (uint16_t)u, &a, &b);
  *dg = a;
  *du = b;
}

/* ---- input data ------------------------------------------------------------------- */

/* A random g: any bit pattern, typical values, or tails. */
static uint32_t random_g(unswag_dtype dt) {
  uint64_t r = rng();
  switch (r % 3) {
    case 0: return dt == UNSWAG_F32 ? (uint32_t)(r >> 32) : (uint32_t)(r >> 48);
    case 1: return ref_round_bits(dt, 3 * rng_normal());
    default: return ref_round_bits(dt, 20 * rng_normal());
  }
}

/* A random u or dh: fp32 any bit pattern or normal values; 16-bit dtypes
 * +-2^[-E, E] log-uniform (see the header comment), 1 in 32 zero. */
static uint32_t random_factor(unswag_dtype dt) {
  if (dt == UNSWAG_F32) return random_g(dt);
  if (rng() % 32 == 0) return ref_round_bits(dt, (rng() & 1) ? -0.0 : 0.0);
  double e = dt == UNSWAG_F16 ? 8.0 : 4.0;
  double v = exp2(-e + 2 * e * rng_unit());
  return ref_round_bits(dt, (rng() & 1) ? -v : v);
}

static const float SPECIALS[] = {
    0.0f,          -0.0f,          INFINITY, -INFINITY,       NAN,
    -NAN,          1e-45f,         -1e-45f,  1.17549435e-38f, -1.17549435e-38f,
    3.4028235e38f, -3.4028235e38f, 1.0f,     -1.0f,           -1.2784645f,
    -0.75179434f,  -0.7517915f,    -10.0f,   -20.0f,          -40.0f,
    -90.0f,        -104.0f,        -700.0f,  -750.0f,         9.0f,
    15.9f,         16.0f,          16.1f,    30.0f,           88.7f,
    -88.7f,        1e10f,          -1e10f,   1e20f,           -1e20f};

/* ---- the value sweep ------------------------------------------------------------- */

/* Checks forward and backward of act over g[0..n) against the reference
 * and against the element math run one element at a time. */
static void check_values(unswag_activation act, unswag_dtype dt, const void *g, size_t n) {
  const size_t es = unswag_dtype_size(dt);
  void *u = malloc(n * es), *dh = malloc(n * es), *h = malloc(n * es), *dg = malloc(n * es),
       *du = malloc(n * es);
  for (size_t i = 0; i < n; ++i) {
    put_bits(dt, u, i, random_factor(dt));
    put_bits(dt, dh, i, random_factor(dt));
  }
  unswag_status s1 = unswag_gated_forward(act, dt, g, u, h, n);
  unswag_status s2 = unswag_gated_backward(act, dt, dh, g, u, dg, du, n);
  CHECK(s1 == UNSWAG_OK && s2 == UNSWAG_OK, "%s %s: status %d %d (%s)", unswag_activation_name(act),
        DT_NAMES[dt], s1, s2, unswag_last_error());

  const double zero = grad_zero(act);
  long bad_h = 0, bad_du = 0, bad_dg = 0, bad_bits = 0, bad_nan = 0, bad_grad = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t gb = get_bits(dt, g, i), ub = get_bits(dt, u, i), dhb = get_bits(dt, dh, i);
    const double gv = decode(dt, gb), uv = decode(dt, ub), dhv = decode(dt, dhb);
    const uint32_t hb = get_bits(dt, h, i), dgb = get_bits(dt, dg, i), dub = get_bits(dt, du, i);

    /* the library's bytes are the element math's */
    uint32_t eh = one_fwd(act, dt, gb, ub), edg, edu;
    one_bwd(act, dt, dhb, gb, ub, &edg, &edu);
    if (hb != eh || dgb != edg || dub != edu) {
      if (!bad_bits++)
        fprintf(stderr, "  %s %s: g=%a: bits h %x/%x dg %x/%x du %x/%x (lib/element)\n",
                unswag_activation_name(act), DT_NAMES[dt], gv, hb, eh, dgb, edg, dub, edu);
    }
    if (!nan_canonical(dt, hb) || !nan_canonical(dt, dgb) || !nan_canonical(dt, dub)) ++bad_nan;

    /* against the double reference */
    const double a = ref_act(act, gv), d = ref_grad(act, gv);
    const double h_ref = a * uv, du_ref = dhv * a, dg_ref = dhv * uv * d;
    const int near_zero = fabs(gv - zero) < NEAR_ZERO_WIDTH;
    /* act' itself: absolute error near its zero, relative error elsewhere
     * (far under an ulp, so a 1-ulp check of dg cannot hide a small error) */
    const double dl = dt == UNSWAG_F32 ? us_gated_grad_f64(act, (float)gv)
                                       : (double)us_gated_grad_f32(act, (float)gv);
    if (near_zero) {
      double *w = &worst_near_zero[dt == UNSWAG_F32 ? 1 : 0];
      if (fabs(dl - d) > *w) *w = fabs(dl - d);
    } else if (fabs(d) > (dt == UNSWAG_F32 ? 0x1.0p-1000 : 0x1.0p-100) && !isnan(d)) {
      if (fabs(dl - d) > fabs(d) * (dt == UNSWAG_F32 ? GRAD_REL_32 : GRAD_REL_16)) {
        if (!bad_grad++)
          fprintf(stderr, "  %s %s: act'(%a) = %a, want %a\n", unswag_activation_name(act),
                  DT_NAMES[dt], gv, dl, d);
      }
    }
    if (ref_ulp_diff(dt, hb, ref_round_bits(dt, h_ref)) > 1) {
      if (!bad_h++)
        fprintf(stderr, "  %s %s: g=%a u=%a h=%a want %a\n", unswag_activation_name(act),
                DT_NAMES[dt], gv, uv, decode(dt, hb), h_ref);
    }
    if (ref_ulp_diff(dt, dub, ref_round_bits(dt, du_ref)) > 1) {
      if (!bad_du++)
        fprintf(stderr, "  %s %s: g=%a dh=%a du=%a want %a\n", unswag_activation_name(act),
                DT_NAMES[dt], gv, dhv, decode(dt, dub), du_ref);
    }
    if (!dg_ok(dt, dgb, dg_ref, dhv * uv, near_zero)) {
      if (!bad_dg++)
        fprintf(stderr, "  %s %s: g=%a u=%a dh=%a dg=%a want %a\n", unswag_activation_name(act),
                DT_NAMES[dt], gv, uv, dhv, decode(dt, dgb), dg_ref);
    }
  }
  const char *an = unswag_activation_name(act);
  CHECK(bad_bits == 0, "%s %s: %ld elements differ from the element math", an, DT_NAMES[dt],
        bad_bits);
  CHECK(bad_nan == 0, "%s %s: %ld NaN outputs not canonical", an, DT_NAMES[dt], bad_nan);
  CHECK(bad_h == 0, "%s %s: %ld h beyond 1 ulp", an, DT_NAMES[dt], bad_h);
  CHECK(bad_du == 0, "%s %s: %ld du beyond 1 ulp", an, DT_NAMES[dt], bad_du);
  CHECK(bad_dg == 0, "%s %s: %ld dg beyond tolerance", an, DT_NAMES[dt], bad_dg);
  CHECK(bad_grad == 0, "%s %s: %ld act' beyond relative error %g", an, DT_NAMES[dt], bad_grad,
        dt == UNSWAG_F32 ? GRAD_REL_32 : GRAD_REL_16);
  free(u), free(dh), free(h), free(dg), free(du);
}

/* us_gelu_f32 (act_math.h) is x * Phi(x) with the Phi of gated_math.h, bit for
 * bit: the two headers share one erfc. */
static void check_shared_erfc(void) {
  long bad = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    for (int bf = 0; bf < 2; ++bf) {
      float x = us_16_to_f32((uint16_t)b, bf);
      uint32_t want = us_f32_to_bits(us_gelu_f32(x)), got = us_f32_to_bits(x * us_norm_cdf_f32(x));
      if (want != got && !(x != x)) ++bad;
    }
  }
  CHECK(bad == 0, "us_gelu_f32 and us_norm_cdf_f32 disagree on %ld inputs", bad);
}

/* ---- tails, alignment, guards ------------------------------------------------------ */

#define TAIL_N 300
#define PAD 64

/* byte offset k of the five alignments: element offsets 0..3, then an odd
 * byte address (not element-aligned) */
static size_t byte_offset(int k, size_t es) { return k < 4 ? (size_t)k * es : 1; }

static int guards_ok(const unsigned char *buf, size_t size, const unsigned char *p, size_t len) {
  for (size_t i = 0; i < size; ++i)
    if ((buf + i < p || buf + i >= p + len) && buf[i] != 0xA5) return 0;
  return 1;
}

static void check_tails(unswag_activation act, unswag_dtype dt) {
  const size_t es = unswag_dtype_size(dt), N = TAIL_N + 8;
  enum { BUF = (TAIL_N + 8) * 4 + 2 * PAD };
  static unsigned char in[3][BUF], out[3][BUF];
  for (int b = 0; b < 3; ++b) /* g, u, dh */
    for (size_t i = 0; i < N; ++i)
      put_bits(dt, in[b], i, b == 0 ? random_g(dt) : random_factor(dt));
  long bad = 0;
  for (size_t n = 0; n <= TAIL_N; ++n) {
    for (int off = 0; off < 5; ++off) {
      /* every pointer gets its own alignment */
      const unsigned char *g = in[0] + byte_offset(off, es);
      const unsigned char *u = in[1] + byte_offset((off + 1) % 5, es);
      const unsigned char *dh = in[2] + byte_offset((off + 2) % 5, es);
      for (int b = 0; b < 3; ++b) memset(out[b], 0xA5, BUF);
      unsigned char *h = out[0] + PAD + byte_offset((off + 3) % 5, es);
      unsigned char *dg = out[1] + PAD + byte_offset((off + 4) % 5, es);
      unsigned char *du = out[2] + PAD + byte_offset(off, es);
      unswag_status s1 = unswag_gated_forward(act, dt, g, u, h, n);
      unswag_status s2 = unswag_gated_backward(act, dt, dh, g, u, dg, du, n);
      int ok = s1 == UNSWAG_OK && s2 == UNSWAG_OK;
      for (size_t i = 0; i < n && ok; ++i) {
        uint32_t gb = get_bits(dt, g, i), ub = get_bits(dt, u, i), dhb = get_bits(dt, dh, i);
        uint32_t edg, edu;
        one_bwd(act, dt, dhb, gb, ub, &edg, &edu);
        ok = get_bits(dt, h, i) == one_fwd(act, dt, gb, ub) && get_bits(dt, dg, i) == edg &&
             get_bits(dt, du, i) == edu;
      }
      ok = ok && guards_ok(out[0], BUF, h, n * es) && guards_ok(out[1], BUF, dg, n * es) &&
           guards_ok(out[2], BUF, du, n * es);
      if (!ok && !bad++)
        fprintf(stderr, "  tails: %s %s n=%zu off=%d\n", unswag_activation_name(act), DT_NAMES[dt],
                n, off);
    }
  }
  CHECK(bad == 0, "tails: %s %s: %ld (n, offset) cases wrong", unswag_activation_name(act),
        DT_NAMES[dt], bad);
}

/* ---- in place -------------------------------------------------------------------------- */

static void check_in_place(unswag_activation act, unswag_dtype dt) {
  const size_t n = 4099, es = unswag_dtype_size(dt); /* several chunks and a tail */
  unsigned char *g = malloc(n * es), *u = malloc(n * es), *dh = malloc(n * es);
  unsigned char *h = malloc(n * es), *dg = malloc(n * es), *du = malloc(n * es);
  unsigned char *a = malloc(n * es), *b = malloc(n * es);
  for (size_t i = 0; i < n; ++i) {
    put_bits(dt, g, i, random_g(dt));
    put_bits(dt, u, i, random_factor(dt));
    put_bits(dt, dh, i, random_factor(dt));
  }
  const char *an = unswag_activation_name(act);
  unswag_gated_forward(act, dt, g, u, h, n);
  unswag_gated_backward(act, dt, dh, g, u, dg, du, n);
  /* dg == g, du == u */
  memcpy(a, g, n * es);
  memcpy(b, u, n * es);
  unswag_status s = unswag_gated_backward(act, dt, dh, a, b, a, b, n);
  CHECK(s == UNSWAG_OK && memcmp(a, dg, n * es) == 0 && memcmp(b, du, n * es) == 0,
        "in-place backward %s %s", an, DT_NAMES[dt]);
  /* h == g, then h == u */
  memcpy(a, g, n * es);
  s = unswag_gated_forward(act, dt, a, u, a, n);
  CHECK(s == UNSWAG_OK && memcmp(a, h, n * es) == 0, "in-place forward h == g %s %s", an,
        DT_NAMES[dt]);
  memcpy(b, u, n * es);
  s = unswag_gated_forward(act, dt, g, b, b, n);
  CHECK(s == UNSWAG_OK && memcmp(b, h, n * es) == 0, "in-place forward h == u %s %s", an,
        DT_NAMES[dt]);
  free(g), free(u), free(dh), free(h), free(dg), free(du), free(a), free(b);
}

/* ---- threads ---------------------------------------------------------------------------- */

/* A call above the threading threshold (2^18) equals calls on three pieces
 * below it, which run on the calling thread. */
static void check_threads(unswag_activation act, unswag_dtype dt) {
  const size_t n = 300001, es = unswag_dtype_size(dt);
  const size_t cut[4] = {0, 100000, 200003, n};
  unsigned char *g = malloc(n * es), *u = malloc(n * es), *dh = malloc(n * es);
  unsigned char *h[2], *dg[2], *du[2];
  for (int k = 0; k < 2; ++k) h[k] = malloc(n * es), dg[k] = malloc(n * es), du[k] = malloc(n * es);
  for (size_t i = 0; i < n; ++i) {
    put_bits(dt, g, i, random_g(dt));
    put_bits(dt, u, i, random_factor(dt));
    put_bits(dt, dh, i, random_factor(dt));
  }
  unswag_status s = unswag_gated_forward(act, dt, g, u, h[0], n);
  s |= unswag_gated_backward(act, dt, dh, g, u, dg[0], du[0], n);
  for (int p = 0; p < 3; ++p) {
    size_t b = cut[p] * es, m = cut[p + 1] - cut[p];
    s |= unswag_gated_forward(act, dt, g + b, u + b, h[1] + b, m);
    s |= unswag_gated_backward(act, dt, dh + b, g + b, u + b, dg[1] + b, du[1] + b, m);
  }
  CHECK(s == UNSWAG_OK && memcmp(h[0], h[1], n * es) == 0 && memcmp(dg[0], dg[1], n * es) == 0 &&
            memcmp(du[0], du[1], n * es) == 0,
        "threaded != single-thread bytes: %s %s", unswag_activation_name(act), DT_NAMES[dt]);
  free(g), free(u), free(dh);
  for (int k = 0; k < 2; ++k) free(h[k]), free(dg[k]), free(du[k]);
}

/* ---- bad input ------------------------------------------------------------------------- */

/* Forward and backward with one thing wrong: status `want`, a detail
 * message, and no output byte written. */
static void expect_fail(const char *what, unswag_status want, unswag_activation act,
                        unswag_dtype dt, size_t n, int null_mask) {
  unsigned char in[3][64] = {{0}}, out[3][64];
  for (int b = 0; b < 3; ++b) memset(out[b], 0xA5, 64);
  const void *g = (null_mask & 1) ? NULL : in[0], *u = (null_mask & 2) ? NULL : in[1];
  const void *dh = (null_mask & 4) ? NULL : in[2];
  void *h = (null_mask & 8) ? NULL : out[0], *dg = (null_mask & 16) ? NULL : out[1];
  void *du = (null_mask & 32) ? NULL : out[2];
  unswag_status s = UNSWAG_OK;
  if (!(null_mask & (4 | 16 | 32))) { /* forward has no dh, dg, du */
    s = unswag_gated_forward(act, dt, g, u, h, n);
    CHECK(s == want, "%s: forward status %d, want %d (%s)", what, s, want, unswag_last_error());
    CHECK(s == UNSWAG_OK || unswag_last_error()[0] != '\0', "%s: no error detail", what);
  }
  if (!(null_mask & 8)) { /* backward has no h */
    s = unswag_gated_backward(act, dt, dh, g, u, dg, du, n);
    CHECK(s == want, "%s: backward status %d, want %d (%s)", what, s, want, unswag_last_error());
    CHECK(s == UNSWAG_OK || unswag_last_error()[0] != '\0', "%s: no error detail", what);
  }
  int untouched = 1;
  for (int b = 0; b < 3; ++b)
    for (int i = 0; i < 64; ++i) untouched &= out[b][i] == 0xA5;
  CHECK(want == UNSWAG_OK || untouched, "%s: an output byte was written on error", what);
}

static void check_bad_input(void) {
  static const int bad_acts[] = {
      UNSWAG_RELU, UNSWAG_LEAKY_RELU, UNSWAG_RELU6, UNSWAG_HARDTANH, UNSWAG_ACTIVATION_COUNT_, -1,
      1000};
  for (size_t k = 0; k < sizeof bad_acts / sizeof *bad_acts; ++k)
    expect_fail("activation", UNSWAG_ERR_BAD_ACTIVATION, (unswag_activation)bad_acts[k], UNSWAG_F16,
                8, 0);
  expect_fail("activation before dtype", UNSWAG_ERR_BAD_ACTIVATION, UNSWAG_RELU, (unswag_dtype)7, 8,
              0);
  expect_fail("dtype", UNSWAG_ERR_BAD_DTYPE, UNSWAG_SILU, UNSWAG_DTYPE_COUNT_, 8, 0);
  expect_fail("dtype -1", UNSWAG_ERR_BAD_DTYPE, UNSWAG_GELU, (unswag_dtype)-1, 8, 0);
  expect_fail("size overflow", UNSWAG_ERR_SIZE_OVERFLOW, UNSWAG_SILU, UNSWAG_F16, SIZE_MAX / 4 + 1,
              0);
  expect_fail("size overflow f32", UNSWAG_ERR_SIZE_OVERFLOW, UNSWAG_GELU_TANH, UNSWAG_F32, SIZE_MAX,
              0);
  for (int bit = 0; bit < 6; ++bit) {
    char what[64];
    snprintf(what, sizeof what, "NULL pointer %d", bit);
    expect_fail(what, UNSWAG_ERR_NULL_POINTER, UNSWAG_SILU, UNSWAG_BF16, 8, 1 << bit);
  }
  /* n = 0: NULL pointers are fine and nothing is written */
  expect_fail("n = 0, NULL", UNSWAG_OK, UNSWAG_GELU, UNSWAG_F32, 0, 1 | 2 | 8);
  expect_fail("n = 0, NULL (backward)", UNSWAG_OK, UNSWAG_GELU, UNSWAG_F32, 0, 1 | 2 | 4 | 16 | 32);
  expect_fail("n = 0", UNSWAG_OK, UNSWAG_SILU, UNSWAG_F16, 0, 0);
  {
    unsigned char out[64];
    memset(out, 0xA5, sizeof out);
    unswag_status s = unswag_gated_forward(UNSWAG_SILU, UNSWAG_F16, out, out, out, 0);
    int untouched = 1;
    for (int i = 0; i < 64; ++i) untouched &= out[i] == 0xA5;
    CHECK(s == UNSWAG_OK && untouched, "n = 0 wrote output");
  }
  /* a build without CUDA says so */
  if (!unswag_cuda_built()) {
    unsigned char buf[16] = {0};
    CHECK(unswag_gated_forward_cuda(UNSWAG_SILU, UNSWAG_F16, buf, buf, buf, 8, NULL) ==
              UNSWAG_ERR_CUDA_NOT_BUILT,
          "gated_forward_cuda without CUDA");
    CHECK(unswag_gated_backward_cuda(UNSWAG_SILU, UNSWAG_F16, buf, buf, buf, buf, buf, 8, NULL) ==
              UNSWAG_ERR_CUDA_NOT_BUILT,
          "gated_backward_cuda without CUDA");
  }
  /* a CUDA build: n = 0 without a device says so (host pointer + n = 1 tells) */
  if (unswag_cuda_built()) {
    unsigned char buf[16] = {0};
    unswag_status probe =
        unswag_gated_forward_cuda(UNSWAG_SILU, UNSWAG_F16, buf, buf, buf, 1, NULL);
    CHECK(probe == UNSWAG_ERR_CUDA_NO_DEVICE || probe == UNSWAG_ERR_BAD_POINTER,
          "gated host pointers on CUDA: %d", probe);
    unswag_status want = probe == UNSWAG_ERR_CUDA_NO_DEVICE ? probe : UNSWAG_OK;
    unswag_status s = unswag_gated_forward_cuda(UNSWAG_SILU, UNSWAG_F16, buf, buf, buf, 0, NULL);
    CHECK(s == want, "gated_forward_cuda n = 0: %d (want %d)", s, want);
    s = unswag_gated_backward_cuda(UNSWAG_SILU, UNSWAG_F16, buf, buf, buf, buf, buf, 0, NULL);
    CHECK(s == want, "gated_backward_cuda n = 0: %d (want %d)", s, want);
  }
}

int main(void) {
  rng_seed(0x2545F4914F6CDD1Dull);
  check_shared_erfc();
  check_bad_input();
  for (int d = 0; d < 3; ++d) {
    const unswag_dtype dt = DTYPES[d];
    const size_t nspec = sizeof SPECIALS / sizeof *SPECIALS;
    const size_t n = dt == UNSWAG_F32 ? 1000000 + nspec : 65536;
    void *g = malloc(n * unswag_dtype_size(dt));
    for (size_t i = 0; i < n; ++i)
      put_bits(dt, g, i, dt == UNSWAG_F32 ? random_g(dt) : (uint32_t)i);
    if (dt == UNSWAG_F32) memcpy((float *)g + 1000000, SPECIALS, sizeof SPECIALS);
    for (int k = 0; k < 3; ++k) {
      check_values(ACTS[k], dt, g, n);
      check_tails(ACTS[k], dt);
      check_in_place(ACTS[k], dt);
      check_threads(ACTS[k], dt);
    }
    free(g);
  }
  printf(
      "near the zero of act': worst |act' error| %.3g (float; bound %.3g), %.3g (double; "
      "bound %.3g); %ld dg checked by the absolute bound\n",
      worst_near_zero[0], DG_TOL_16, worst_near_zero[1], DG_TOL_32, near_zero_fallbacks);
  CHECK(worst_near_zero[0] <= DG_TOL_16 && worst_near_zero[1] <= DG_TOL_32,
        "act' error near its zero beyond the bound");
  check_cpu_variant("test_gated");
  CHECK_SUMMARY("test_gated");
}

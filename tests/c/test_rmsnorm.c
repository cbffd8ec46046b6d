/* RMSNorm tests (unswag_rmsnorm_forward / _backward, CPU):
 *
 *  - against a double-precision reference (libm), with stated bounds:
 *      rstd: within RSTD_ULPS(cols) fp32 ulps (16-bit: float row sum, the
 *            rounding-error bound of its fixed order; fp32: double sum, 1 ulp);
 *      n = round(x * rstd): within 1 ulp of round(x * rstd_ref), and y is
 *            exactly round(w * n) (HF rounds n to the dtype before the weight);
 *            so y is within 2 ulps of the reference with HF's double rounding
 *            (1 ulp of n can move w * n by up to 2 ulps of y); the test prints
 *            how many differ and by how much;
 *      fp32 y: within 3 ulps (rstd, then two float products);
 *      dx:   the error bound of its float formula (see dx_tol), from a double
 *            reference that takes the library's rstd as given;
 *      dw:   the error bound of its float sums (see dw_tol);
 *  - every one of the 65,536 fp16 and bf16 bit patterns is an input element
 *    (two sweeps: rows of 64 patterns + 192 typical values, and rows made only
 *    of consecutive patterns).  A row with a NaN gives rstd NaN and y NaN; a
 *    row whose fp32 sum of squares overflows (bf16 |x| >~ 2^64) gives rstd 0,
 *    y = +-0 for finite x and NaN for +-Inf (HF computes the same in fp32);
 *  - the library's bytes equal this file's own model of the documented
 *    summation order (written lane by lane, with double storage rounded to
 *    float after each operation), for many shapes (cols not a multiple of 8,
 *    1..5000), unaligned pointers, threaded calls; guard bytes untouched;
 *  - y == x and dx == dy in place give the same bytes; dw accumulates (adds);
 *  - bad input returns its status and writes nothing. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "test_data.h"
#include "reference.h"
#include "unswag.h"

static const unswag_dtype DTYPES[] = {UNSWAG_F32, UNSWAG_F16, UNSWAG_BF16};
static const char *DT_NAMES[] = {"f32", "f16", "bf16"};
static const float EPS = 1e-6f;

/* ---- buffers ---------------------------------------------------------------------- */

static uint32_t get_bits(unswag_dtype dt, const void *buf, size_t i) {
  return ref_bits(dt, buf, i);
}
static double val(unswag_dtype dt, uint32_t b) {
  unsigned char t[4];
  put_bits(dt, t, 0, b);
  return ref_load(dt, t, 0);
}
static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static uint32_t canon_nan(unswag_dtype dt) {
  return dt == UNSWAG_F32 ? 0x7FC00000u : dt == UNSWAG_F16 ? 0x7E00u : 0x7FC0u;
}
/* spacing of dt at |v| */
static double ulp_at(unswag_dtype dt, double v) {
  const uint32_t inf = dt == UNSWAG_F32 ? 0x7F800000u : dt == UNSWAG_F16 ? 0x7C00u : 0x7F80u;
  uint32_t b = ref_round_bits(dt, fabs(v));
  if (b >= inf - 1) return val(dt, inf - 1) - val(dt, inf - 2);
  return val(dt, b + 1) - val(dt, b);
}

/* random element: normal(0, scale) in dt */
static uint32_t rnd(unswag_dtype dt, double scale) {
  return ref_round_bits(dt, scale * rng_normal());
}

/* ---- the model: the documented order, written independently ----------------------------- */

/* One operation of the row sums: float for fp16/bf16 (double storage, rounded
 * to float after each op; exact emulation since double has > 2 * 24 + 2
 * bits), double for fp32. */
static double op_round(int single, double v) { return single ? (double)(float)v : v; }

#define LANES 256

/* The tree of the 256 lanes: per set of 32, offsets 16..1; then over the 8
 * set sums, offsets 4..1.  Recursive halving over a copy. */
static double tree(int single, const double *lanes) {
  double a[LANES], s[8];
  memcpy(a, lanes, sizeof a);
  for (int set = 0; set < 8; ++set) {
    double *b = a + set * 32;
    for (int width = 32; width > 1; width /= 2)
      for (int j = 0; j < width / 2; ++j) b[j] = op_round(single, b[j] + b[j + width / 2]);
    s[set] = b[0];
  }
  for (int width = 8; width > 1; width /= 2)
    for (int j = 0; j < width / 2; ++j) s[j] = op_round(single, s[j] + s[j + width / 2]);
  return s[0];
}

/* Sum over a row of term(i), in the documented order; term values already
 * rounded as the library rounds them. */
typedef double (*term_fn)(size_t i, const void *ctx);

static double model_sum(int single, size_t cols, term_fn term, const void *ctx) {
  double lanes[LANES];
  const size_t groups = (cols + 7) / 8;
  for (size_t l = 0; l < LANES; ++l) {
    double acc = 0.0;
    for (size_t v = l; v < groups; v += LANES) {
      double t[8];
      for (int k = 0; k < 8; ++k) t[k] = v * 8 + k < cols ? term(v * 8 + k, ctx) : 0.0;
      double p01 = op_round(single, t[0] + t[1]), p23 = op_round(single, t[2] + t[3]);
      double p45 = op_round(single, t[4] + t[5]), p67 = op_round(single, t[6] + t[7]);
      double q0 = op_round(single, p01 + p23), q1 = op_round(single, p45 + p67);
      acc = op_round(single, acc + op_round(single, q0 + q1));
    }
    lanes[l] = acc;
  }
  return tree(single, lanes);
}

struct row_ctx {
  unswag_dtype dt;
  const void *dy, *x, *w;
  float rstd;
};

static double sq_term(size_t i, const void *c) {
  const struct row_ctx *r = c;
  float xf = (float)ref_load(r->dt, r->x, i);
  return r->dt == UNSWAG_F32 ? (double)xf * xf : (double)(xf * xf);
}

static double dot_term(size_t i, const void *c) {
  const struct row_ctx *r = c;
  float g = (float)ref_load(r->dt, r->dy, i) * (float)ref_load(r->dt, r->w, i);
  float nf = (float)ref_load(r->dt, r->x, i) * r->rstd;
  return r->dt == UNSWAG_F32 ? (double)g * nf : (double)(g * nf);
}

static float model_rstd(unswag_dtype dt, const void *x, size_t cols, float eps) {
  struct row_ctx c = {dt, NULL, x, NULL, 0.0f};
  double sum = model_sum(dt != UNSWAG_F32, cols, sq_term, &c);
  float r;
  if (dt == UNSWAG_F32) {
    r = (float)(1.0 / sqrt(sum / (double)cols + (double)eps));
  } else {
    float m = (float)sum / (float)cols;
    r = 1.0f / sqrtf(m + eps);
  }
  return isnan(r) ? NAN : r;
}

static float model_mean(unswag_dtype dt, const void *dy, const void *x, const void *w, float rstd,
                        size_t cols) {
  struct row_ctx c = {dt, dy, x, w, rstd};
  double sum = model_sum(dt != UNSWAG_F32, cols, dot_term, &c);
  return dt == UNSWAG_F32 ? (float)(sum / (double)cols) : (float)sum / (float)cols;
}

/* float -> dt bits with round to nearest even (the public conversions) */
static uint32_t to_dt(unswag_dtype dt, float f) {
  if (dt == UNSWAG_F32) return isnan(f) ? 0x7FC00000u : f32_bits(f);
  return dt == UNSWAG_F16 ? unswag_f32_to_f16(f) : unswag_f32_to_bf16(f);
}

static uint32_t model_n(unswag_dtype dt, uint32_t x, float rstd) {
  return to_dt(dt, (float)val(dt, x) * rstd);
}
static uint32_t model_y(unswag_dtype dt, uint32_t x, uint32_t w, float rstd) {
  return to_dt(dt, (float)val(dt, w) * (float)val(dt, model_n(dt, x, rstd)));
}
static uint32_t model_dx(unswag_dtype dt, uint32_t dy, uint32_t x, uint32_t w, float rstd,
                         float mean) {
  float g = (float)val(dt, dy) * (float)val(dt, w);
  float nf = (float)val(dt, x) * rstd;
  return to_dt(dt, rstd * (g - nf * mean));
}

/* dw[j] after one call: chunks of max(8, ceil(rows / 512)) rows */
static void model_dw(unswag_dtype dt, const void *dy, const void *x, const float *rstd, size_t rows,
                     size_t cols, float *dw) {
  size_t per = (rows + 511) / 512;
  if (per < 8) per = 8;
  for (size_t j = 0; j < cols; ++j) {
    float total = 0.0f;
    for (size_t c0 = 0; c0 < rows; c0 += per) {
      float part = 0.0f;
      for (size_t r = c0; r < rows && r < c0 + per; ++r) {
        float n = (float)val(dt, model_n(dt, get_bits(dt, x, r * cols + j), rstd[r]));
        part = part + (float)val(dt, get_bits(dt, dy, r * cols + j)) * n;
      }
      total = total + part;
    }
    float d = dw[j] + total;
    dw[j] = isnan(d) ? NAN : d;
  }
}

/* ---- reference bounds ----------------------------------------------------------------- */

/* fp32 ulps allowed between rstd and the double reference.  16-bit: the row
 * sum of exact squares has relative error <= depth * 2^-24 (depth: 3 pairwise
 * levels, the lane's sequential adds, 8 tree levels); mean and + eps add
 * one rounding each, sqrt halves the relative error and adds half an ulp,
 * the division half an ulp; an ulp is >= 2^-24 relative.  fp32: double sums,
 * one final rounding. */
static double rstd_ulps(unswag_dtype dt, size_t cols) {
  if (dt == UNSWAG_F32) return 1.0;
  const size_t groups = (cols + 7) / 8, per_lane = (groups + LANES - 1) / LANES;
  const double depth = 3 + (double)(per_lane > 0 ? per_lane - 1 : 0) + 8;
  return (depth + 2) / 2 + 1 + 1;
}

static const double U = 0x1.0p-24; /* float unit roundoff */

/* |dx - dx_ref| allowed: 1 ulp of the dtype at the reference (final rounding
 * and slack) + rstd * (4u (|g| + |nf m|) + |nf| * E_m), with E_m the error of
 * the float mean: (depth + 4) u sum|g nf| / cols. */
static double dx_tol(unswag_dtype dt, double g, double nf, double m, double rstd,
                     double abs_dot_mean, size_t cols, double ref) {
  const size_t groups = (cols + 7) / 8, per_lane = (groups + LANES - 1) / LANES;
  const double depth = 3 + (double)per_lane + 8;
  const double em = (dt == UNSWAG_F32 ? 4.0 : depth + 4) * U * abs_dot_mean + U * fabs(m);
  return ulp_at(dt, ref) + rstd * (4 * U * (fabs(g) + fabs(nf * m)) + fabs(nf) * em);
}

/* |dw - dw_ref| allowed: each float add of the chunked sum costs <= u of the
 * running magnitude: (rows a chunk + chunks + 2) u sum|dy n| + u |dw0|. */
static double dw_tol(size_t rows, double abs_sum, double dw0) {
  size_t per = (rows + 511) / 512;
  if (per < 8) per = 8;
  const size_t chunks = (rows + per - 1) / per;
  return (double)(per + chunks + 2) * U * abs_sum + U * fabs(dw0) + 1e-45;
}

/* ---- checks of one call against the model ----------------------------------------------- */

/* Forward + backward of (rows, cols) at the given buffers; compares every
 * output byte to the model.  Returns the number of mismatching items. */
static long check_model(unswag_dtype dt, const void *x, const void *w, const void *dy, size_t rows,
                        size_t cols, void *y, float *rstd, void *dx, float *dw) {
  long bad = 0;
  float *dw_model = malloc((cols ? cols : 1) * sizeof(float));
  for (size_t j = 0; j < cols; ++j) dw_model[j] = dw[j] = (float)rng_normal();
  unswag_status s1 = unswag_rmsnorm_forward(dt, x, w, y, rstd, rows, cols, EPS, 0.0f);
  unswag_status s2 = unswag_rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, rows, cols, 0.0f);
  if (s1 != UNSWAG_OK || s2 != UNSWAG_OK) {
    fprintf(stderr, "  status %d %d (%s)\n", s1, s2, unswag_last_error());
    free(dw_model);
    return 1;
  }
  const size_t es = unswag_dtype_size(dt);
  for (size_t r = 0; r < rows; ++r) {
    const char *xr = (const char *)x + r * cols * es, *dyr = (const char *)dy + r * cols * es;
    float mr = model_rstd(dt, xr, cols, EPS);
    if (f32_bits(rstd[r]) != (isnan(mr) ? 0x7FC00000u : f32_bits(mr))) {
      if (!bad++) fprintf(stderr, "  rstd[%zu] %a, model %a\n", r, rstd[r], mr);
    }
    float mean = model_mean(dt, dyr, xr, w, mr, cols);
    for (size_t j = 0; j < cols; ++j) {
      uint32_t xb = get_bits(dt, xr, j), wb = get_bits(dt, w, j), db = get_bits(dt, dyr, j);
      if (get_bits(dt, y, r * cols + j) != model_y(dt, xb, wb, mr)) {
        if (!bad++) fprintf(stderr, "  y[%zu,%zu]\n", r, j);
      }
      if (get_bits(dt, dx, r * cols + j) != model_dx(dt, db, xb, wb, mr, mean)) {
        if (!bad++) fprintf(stderr, "  dx[%zu,%zu]\n", r, j);
      }
    }
  }
  model_dw(dt, dy, x, rstd, rows, cols, dw_model);
  for (size_t j = 0; j < cols; ++j)
    if (f32_bits(dw[j]) != f32_bits(dw_model[j])) {
      if (!bad++) fprintf(stderr, "  dw[%zu] %a, model %a\n", j, dw[j], dw_model[j]);
    }
  free(dw_model);
  return bad;
}

/* ---- the exhaustive 16-bit sweeps against the double reference -------------------------- */

struct stats {
  double worst_rstd_ulps;
  long y_off1, y_off2, n_off1;
  long rows_nan, rows_overflow, rows_normal;
};

/* Checks one forward row against the reference; returns failures. */
static long check_row_reference(unswag_dtype dt, const void *x, const void *w, const void *y,
                                float rstd, size_t cols, struct stats *st) {
  long bad = 0;
  double sum = 0;
  int has_nan = 0;
  for (size_t j = 0; j < cols; ++j) {
    double v = ref_load(dt, x, j);
    has_nan |= isnan(v);
    sum += v * v;
  }
  /* the library's y is exactly round(w * round(x * rstd)) whatever the row */
  for (size_t j = 0; j < cols; ++j) {
    if (get_bits(dt, y, j) != model_y(dt, get_bits(dt, x, j), get_bits(dt, w, j), rstd)) {
      if (!bad++)
        fprintf(stderr, "  %s: y[%zu] is not round(w * round(x * rstd))\n", DT_NAMES[dt], j);
    }
  }
  if (has_nan) {
    ++st->rows_nan;
    if (f32_bits(rstd) != 0x7FC00000u) {
      ++bad;
      fprintf(stderr, "  %s: NaN row, rstd %a\n", DT_NAMES[dt], rstd);
    }
    for (size_t j = 0; j < cols; ++j)
      if (get_bits(dt, y, j) != canon_nan(dt)) {
        if (!bad++) fprintf(stderr, "  %s: NaN row, y not NaN\n", DT_NAMES[dt]);
      }
    return bad;
  }
  if (dt != UNSWAG_F32 && sum >= 0x1.0p128 * (1 - 0x1.0p-20)) { /* float sum overflows */
    ++st->rows_overflow;
    if (rstd != 0.0f) {
      ++bad;
      fprintf(stderr, "  %s: overflowing row, rstd %a\n", DT_NAMES[dt], rstd);
    }
    return bad;
  }
  ++st->rows_normal;
  const double rref = 1.0 / sqrt(sum / (double)cols + (double)EPS);
  const double ru = fabs(rstd - rref) / ulp_at(UNSWAG_F32, rref);
  if (ru > st->worst_rstd_ulps) st->worst_rstd_ulps = ru;
  if (ru > rstd_ulps(dt, cols)) {
    ++bad;
    fprintf(stderr, "  %s: rstd %a, reference %a (%.2f ulps)\n", DT_NAMES[dt], rstd, rref, ru);
  }
  for (size_t j = 0; j < cols; ++j) {
    const double xv = ref_load(dt, x, j), wv = ref_load(dt, w, j);
    const uint32_t yb = get_bits(dt, y, j);
    if (dt == UNSWAG_F32) {
      const uint64_t d = ref_ulp_diff(dt, yb, ref_round_bits(dt, wv * (xv * rref)));
      if (d > 3) {
        if (!bad++) fprintf(stderr, "  f32: y %a, reference %a\n", val(dt, yb), wv * xv * rref);
      }
      continue;
    }
    const uint32_t n_ref = ref_round_bits(dt, xv * rref);
    const uint32_t y_ref = ref_round_bits(dt, wv * val(dt, n_ref));
    const uint64_t dn = ref_ulp_diff(dt, model_n(dt, get_bits(dt, x, j), rstd), n_ref);
    const uint64_t dy = ref_ulp_diff(dt, yb, y_ref);
    st->n_off1 += dn == 1;
    st->y_off1 += dy == 1;
    st->y_off2 += dy == 2;
    if (dn > 1 || dy > 2) {
      if (!bad++)
        fprintf(stderr, "  %s: x %a w %a: n off by %llu, y %a vs %a\n", DT_NAMES[dt], xv, wv,
                (unsigned long long)dn, val(dt, yb), val(dt, y_ref));
    }
  }
  return bad;
}

/* Backward of one row against the double reference; returns failures. */
static long check_row_backward(unswag_dtype dt, const void *dy, const void *x, const void *w,
                               float rstd, const void *dx, size_t cols) {
  long bad = 0;
  double dot = 0, adot = 0;
  for (size_t j = 0; j < cols; ++j) {
    double g = ref_load(dt, dy, j) * ref_load(dt, w, j), nf = ref_load(dt, x, j) * rstd;
    dot += g * nf;
    adot += fabs(g * nf);
  }
  if (isnan(dot) || isinf(dot) || isnan(rstd) || isinf(rstd))
    return 0; /* NaN rows: model check only */
  const double m = dot / (double)cols;
  for (size_t j = 0; j < cols; ++j) {
    const double g = ref_load(dt, dy, j) * ref_load(dt, w, j), nf = ref_load(dt, x, j) * rstd;
    const double ref = rstd * (g - nf * m);
    const double got = ref_load(dt, dx, j);
    const double tol = dx_tol(dt, g, nf, m, rstd, adot / (double)cols, cols, ref);
    if (!(fabs(got - ref) <= tol)) {
      if (!bad++)
        fprintf(stderr, "  %s: dx[%zu] %a, reference %a, tol %a\n", DT_NAMES[dt], j, got, ref, tol);
    }
  }
  return bad;
}

/* dw against the double reference (n as the library rounds it). */
static long check_dw_reference(unswag_dtype dt, const void *dy, const void *x, const float *rstd,
                               size_t rows, size_t cols, const float *dw0, const float *dw) {
  long bad = 0;
  for (size_t j = 0; j < cols; ++j) {
    double s = 0, as = 0;
    for (size_t r = 0; r < rows; ++r) {
      double t = ref_load(dt, dy, r * cols + j) *
                 val(dt, model_n(dt, get_bits(dt, x, r * cols + j), rstd[r]));
      s += t;
      as += fabs(t);
    }
    if (isnan(s) || isinf(s)) continue;
    const double ref = (double)dw0[j] + s;
    if (!(fabs(dw[j] - ref) <= dw_tol(rows, as, dw0[j]))) {
      if (!bad++) fprintf(stderr, "  %s: dw[%zu] %a, reference %a\n", DT_NAMES[dt], j, dw[j], ref);
    }
  }
  return bad;
}

/* Runs a sweep buffer (rows x cols of x) through forward and backward and
 * checks everything against the reference and the model. */
static void run_sweep(unswag_dtype dt, const char *name, void *x, size_t rows, size_t cols) {
  const size_t es = unswag_dtype_size(dt), n = rows * cols;
  void *w = malloc(cols * es), *y = malloc(n * es), *dy = malloc(n * es), *dx = malloc(n * es);
  float *rstd = malloc(rows * 4), *dw = malloc(cols * 4), *dw0 = malloc(cols * 4);
  for (size_t j = 0; j < cols; ++j) put_bits(dt, w, j, rnd(dt, 1.0));
  for (size_t i = 0; i < n; ++i) put_bits(dt, dy, i, rnd(dt, 1.0));
  struct stats st;
  memset(&st, 0, sizeof st);
  long bad_fwd = 0, bad_bwd = 0;
  unswag_status s = unswag_rmsnorm_forward(dt, x, w, y, rstd, rows, cols, EPS, 0.0f);
  CHECK(s == UNSWAG_OK, "%s %s: forward status %d (%s)", name, DT_NAMES[dt], s,
        unswag_last_error());
  for (size_t j = 0; j < cols; ++j) dw0[j] = dw[j] = (float)rng_normal();
  s = unswag_rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, rows, cols, 0.0f);
  CHECK(s == UNSWAG_OK, "%s %s: backward status %d", name, DT_NAMES[dt], s);
  for (size_t r = 0; r < rows; ++r) {
    const size_t o = r * cols * es;
    bad_fwd += check_row_reference(dt, (char *)x + o, w, (char *)y + o, rstd[r], cols, &st);
    bad_bwd +=
        check_row_backward(dt, (char *)dy + o, (char *)x + o, w, rstd[r], (char *)dx + o, cols);
  }
  long bad_dw = check_dw_reference(dt, dy, x, rstd, rows, cols, dw0, dw);
  long bad_model = check_model(dt, x, w, dy, rows, cols, y, rstd, dx, dw);
  printf(
      "%s %s: %ld rows (%ld NaN, %ld overflow), rstd worst %.2f fp32 ulps (bound %.1f); "
      "n off by 1 ulp: %ld; y off by 1 / 2 ulps: %ld / %ld of %zu\n",
      name, DT_NAMES[dt], st.rows_normal + st.rows_nan + st.rows_overflow, st.rows_nan,
      st.rows_overflow, st.worst_rstd_ulps, rstd_ulps(dt, cols), st.n_off1, st.y_off1, st.y_off2,
      n);
  CHECK(bad_fwd == 0, "%s %s: %ld forward failures vs the reference", name, DT_NAMES[dt], bad_fwd);
  CHECK(bad_bwd == 0, "%s %s: %ld dx beyond the bound", name, DT_NAMES[dt], bad_bwd);
  CHECK(bad_dw == 0, "%s %s: %ld dw beyond the bound", name, DT_NAMES[dt], bad_dw);
  CHECK(bad_model == 0, "%s %s: %ld outputs differ from the model", name, DT_NAMES[dt], bad_model);
  free(w), free(y), free(dy), free(dx), free(rstd), free(dw), free(dw0);
}

static void check_exhaustive(unswag_dtype dt) {
  /* rows of 64 consecutive patterns among 192 typical values */
  const size_t cols = 256, rows = 65536 / 64;
  void *x = malloc(rows * cols * 2);
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < cols; ++j)
      put_bits(dt, x, r * cols + j, j < 64 ? (uint32_t)(r * 64 + j) : rnd(dt, 1.0));
  run_sweep(dt, "sweep mixed", x, rows, cols);
  /* rows made only of 256 consecutive patterns (same sign and exponent range) */
  for (size_t i = 0; i < 65536; ++i) put_bits(dt, x, i, (uint32_t)i);
  run_sweep(dt, "sweep pure", x, 256, 256);
  free(x);
}

/* fp32: random rows of assorted scales, incl. large and tiny values */
static void check_f32_random(void) {
  const size_t rows = 600, cols = 1000;
  float *x = malloc(rows * cols * 4);
  for (size_t r = 0; r < rows; ++r) {
    const double scale = ldexp(1.0, (int)(rng() % 200) - 100);
    for (size_t j = 0; j < cols; ++j) x[r * cols + j] = (float)(scale * rng_normal());
  }
  x[5] = NAN;             /* row 0: NaN */
  x[cols + 3] = INFINITY; /* row 1: Inf -> rstd 0 (double sum is Inf) */
  run_sweep(UNSWAG_F32, "random", x, rows, cols);
  free(x);
}

/* ---- shapes, alignment, guards ---------------------------------------------------------- */

#define PAD 64

static int guards_ok(const unsigned char *buf, size_t size, const unsigned char *p, size_t len) {
  for (size_t i = 0; i < size; ++i)
    if ((buf + i < p || buf + i >= p + len) && buf[i] != 0xA5) return 0;
  return 1;
}

static void check_shapes(unswag_dtype dt) {
  static const size_t COLS[] = {1,   2,   3,   5,    7,    8,    9,    15,   16,
                                17,  31,  63,  64,   100,  127,  128,  129,  255,
                                256, 257, 511, 1000, 2047, 2048, 2049, 4096, 5000};
  static const size_t ROWS[] = {1, 2, 3, 7, 8, 9, 17, 100};
  const size_t es = unswag_dtype_size(dt);
  long bad = 0, bad_guard = 0;
  for (size_t ci = 0; ci < sizeof COLS / sizeof *COLS; ++ci) {
    for (size_t ri = 0; ri < sizeof ROWS / sizeof *ROWS; ++ri) {
      const size_t cols = COLS[ci], rows = ROWS[ri], n = rows * cols;
      if (n > 100000 && ri % 2) continue; /* keep the suite fast */
      /* offsets: aligned, one element, one byte (not element-aligned) */
      const size_t off = (ci + ri) % 3 == 0 ? 0 : (ci + ri) % 3 == 1 ? es : 1;
      const size_t size = n * es + 2 * PAD;
      unsigned char *bx = malloc(size), *bw = malloc(cols * es + 2 * PAD), *bdy = malloc(size);
      unsigned char *by = malloc(size), *bdx = malloc(size);
      float *rstd = malloc((rows + 2) * 4), *dw = malloc((cols + 2) * 4);
      unsigned char *x = bx + PAD + off, *w = bw + PAD + (off ? 1 : 0), *dy = bdy + PAD + off;
      unsigned char *y = by + PAD + (off == 1 ? 0 : off), *dx = bdx + PAD + (off == es ? 1 : off);
      const double scale = ldexp(1.0, (int)(rng() % 16) - 8);
      for (size_t i = 0; i < n; ++i) {
        put_bits(dt, x, i, rnd(dt, scale));
        put_bits(dt, dy, i, rnd(dt, 1.0));
      }
      for (size_t j = 0; j < cols; ++j) put_bits(dt, w, j, rnd(dt, 1.0));
      memset(by, 0xA5, size);
      memset(bdx, 0xA5, size);
      long b = check_model(dt, x, w, dy, rows, cols, y, rstd, dx, dw);
      if (b && !bad++)
        fprintf(stderr, "  shapes %s rows %zu cols %zu off %zu\n", DT_NAMES[dt], rows, cols, off);
      if (!guards_ok(by, size, y, n * es) || !guards_ok(bdx, size, dx, n * es)) ++bad_guard;
      free(bx), free(bw), free(bdy), free(by), free(bdx), free(rstd), free(dw);
    }
  }
  CHECK(bad == 0, "shapes %s: %ld shapes differ from the model", DT_NAMES[dt], bad);
  CHECK(bad_guard == 0, "shapes %s: %ld shapes wrote outside their outputs", DT_NAMES[dt],
        bad_guard);
}

/* ---- in place, accumulation, threads ------------------------------------------------------- */

static void check_in_place_and_accumulate(unswag_dtype dt) {
  const size_t rows = 37, cols = 300, es = unswag_dtype_size(dt), n = rows * cols;
  unsigned char *x = malloc(n * es), *w = malloc(cols * es), *dy = malloc(n * es);
  unsigned char *y = malloc(n * es), *dx = malloc(n * es), *buf = malloc(n * es);
  float rstd[37], rstd2[37], dw[300], dw2[300], dwa[300];
  for (size_t i = 0; i < n; ++i)
    put_bits(dt, x, i, rnd(dt, 3.0)), put_bits(dt, dy, i, rnd(dt, 1.0));
  for (size_t j = 0; j < cols; ++j) put_bits(dt, w, j, rnd(dt, 1.0));
  memset(dw, 0, sizeof dw);
  unswag_status s = unswag_rmsnorm_forward(dt, x, w, y, rstd, rows, cols, EPS, 0.0f);
  s |= unswag_rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, rows, cols, 0.0f);
  /* y == x */
  memcpy(buf, x, n * es);
  s |= unswag_rmsnorm_forward(dt, buf, w, buf, rstd2, rows, cols, EPS, 0.0f);
  CHECK(s == UNSWAG_OK && memcmp(buf, y, n * es) == 0 && memcmp(rstd, rstd2, sizeof rstd) == 0,
        "%s: in-place forward (y == x) differs", DT_NAMES[dt]);
  /* dx == dy */
  memcpy(buf, dy, n * es);
  memset(dw2, 0, sizeof dw2);
  s = unswag_rmsnorm_backward(dt, buf, x, w, rstd, buf, dw2, rows, cols, 0.0f);
  CHECK(s == UNSWAG_OK && memcmp(buf, dx, n * es) == 0 && memcmp(dw, dw2, sizeof dw) == 0,
        "%s: in-place backward (dx == dy) differs", DT_NAMES[dt]);
  /* dw adds: a second call on rows [0, 20) then [20, 37) adds both tiles' sums */
  for (size_t j = 0; j < cols; ++j) dwa[j] = 0.5f, dw2[j] = 0.5f;
  s = unswag_rmsnorm_backward(dt, dy, x, w, rstd, dx, dwa, 20, cols, 0.0f);
  s |= unswag_rmsnorm_backward(dt, dy + 20 * cols * es, x + 20 * cols * es, w, rstd + 20, dx, dwa,
                               rows - 20, cols, 0.0f);
  model_dw(dt, dy, x, rstd, 20, cols, dw2);
  model_dw(dt, dy + 20 * cols * es, x + 20 * cols * es, rstd + 20, rows - 20, cols, dw2);
  CHECK(s == UNSWAG_OK && memcmp(dwa, dw2, sizeof dw2) == 0,
        "%s: dw does not accumulate over tiles", DT_NAMES[dt]);
  float zero[300];
  for (size_t j = 0; j < cols; ++j) zero[j] = 0.5f;
  CHECK(check_dw_reference(dt, dy, x, rstd, rows, cols, zero, dwa) == 0,
        "%s: accumulated dw vs the reference", DT_NAMES[dt]);
  free(x), free(w), free(dy), free(y), free(dx), free(buf);
}

/* A call big enough for threads equals the model (which is single-threaded),
 * and rows computed in pieces give the same bytes. */
static void check_threads(unswag_dtype dt) {
  const size_t rows = 700, cols = 1031, es = unswag_dtype_size(dt), n = rows * cols;
  unsigned char *x = malloc(n * es), *w = malloc(cols * es), *dy = malloc(n * es);
  unsigned char *y = malloc(n * es), *dx = malloc(n * es), *y2 = malloc(n * es),
                *dx2 = malloc(n * es);
  float *rstd = malloc(rows * 4), *rstd2 = malloc(rows * 4), *dw = malloc(cols * 4),
        *dw2 = malloc(cols * 4);
  for (size_t i = 0; i < n; ++i)
    put_bits(dt, x, i, rnd(dt, 2.0)), put_bits(dt, dy, i, rnd(dt, 1.0));
  for (size_t j = 0; j < cols; ++j) put_bits(dt, w, j, rnd(dt, 1.0)), dw2[j] = 0.0f;
  long bad = check_model(dt, x, w, dy, rows, cols, y, rstd, dx, dw);
  CHECK(bad == 0, "%s: threaded call differs from the model (%ld)", DT_NAMES[dt], bad);
  unswag_status s = UNSWAG_OK;
  for (size_t r0 = 0; r0 < rows; r0 += 100) {
    const size_t o = r0 * cols * es;
    s |= unswag_rmsnorm_forward(dt, x + o, w, y2 + o, rstd2 + r0, 100, cols, EPS, 0.0f);
    s |= unswag_rmsnorm_backward(dt, dy + o, x + o, w, rstd2 + r0, dx2 + o, dw2, 100, cols, 0.0f);
  }
  CHECK(s == UNSWAG_OK && memcmp(y, y2, n * es) == 0 && memcmp(dx, dx2, n * es) == 0 &&
            memcmp(rstd, rstd2, rows * 4) == 0,
        "%s: threaded call differs from calls on row pieces", DT_NAMES[dt]);
  free(x), free(w), free(dy), free(y), free(dx), free(y2), free(dx2), free(rstd), free(rstd2),
      free(dw), free(dw2);
}

/* ---- bad input ----------------------------------------------------------------------------- */

static _Alignas(16) unsigned char in_buf[4][256];
static _Alignas(16) unsigned char out_buf[4][256];

static void reset_out(void) { memset(out_buf, 0xA5, sizeof out_buf); }
static int out_untouched(void) {
  for (size_t b = 0; b < 4; ++b)
    for (size_t i = 0; i < 256; ++i)
      if (out_buf[b][i] != 0xA5) return 0;
  return 1;
}

static void expect_fwd(const char *what, unswag_status want, unswag_dtype dt, const void *x,
                       const void *w, void *y, float *rstd, size_t rows, size_t cols, float eps,
                       float off) {
  reset_out();
  unswag_status s = unswag_rmsnorm_forward(dt, x, w, y, rstd, rows, cols, eps, off);
  CHECK(s == want, "%s: forward status %d, want %d (%s)", what, s, want, unswag_last_error());
  CHECK(s == UNSWAG_OK || unswag_last_error()[0] != '\0', "%s: no error detail", what);
  CHECK(want != UNSWAG_OK ? out_untouched() : 1, "%s: an output byte was written on error", what);
}

static void expect_bwd(const char *what, unswag_status want, unswag_dtype dt, const void *dy,
                       const void *x, const void *w, const float *rstd, void *dx, float *dw,
                       size_t rows, size_t cols, float off) {
  reset_out();
  unswag_status s = unswag_rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, rows, cols, off);
  CHECK(s == want, "%s: backward status %d, want %d (%s)", what, s, want, unswag_last_error());
  CHECK(s == UNSWAG_OK || unswag_last_error()[0] != '\0', "%s: no error detail", what);
  CHECK(want != UNSWAG_OK ? out_untouched() : 1, "%s: an output byte was written on error", what);
}

static void check_bad_input(void) {
  const unswag_dtype B = UNSWAG_BF16;
  void *x = in_buf[0], *w = in_buf[1], *dy = in_buf[2];
  float *rin = (float *)(void *)in_buf[3];
  void *y = out_buf[0], *dx = out_buf[1];
  float *rstd = (float *)(void *)out_buf[2], *dw = (float *)(void *)out_buf[3];
  for (int i = 0; i < 64; ++i) rin[i] = 1.0f;
  /* dtype */
  expect_fwd("dtype 3", UNSWAG_ERR_BAD_DTYPE, (unswag_dtype)3, x, w, y, rstd, 4, 8, EPS, 0);
  expect_bwd("dtype -1", UNSWAG_ERR_BAD_DTYPE, (unswag_dtype)-1, dy, x, w, rin, dx, dw, 4, 8, 0);
  /* sizes */
  expect_fwd("rows x cols overflow", UNSWAG_ERR_SIZE_OVERFLOW, B, x, w, y, rstd, SIZE_MAX / 2, 4,
             EPS, 0);
  expect_bwd("rows x cols overflow", UNSWAG_ERR_SIZE_OVERFLOW, UNSWAG_F32, dy, x, w, rin, dx, dw,
             (size_t)1 << 40, (size_t)1 << 30, 0);
  expect_fwd("cols overflow", UNSWAG_ERR_SIZE_OVERFLOW, B, x, w, y, rstd, 0, SIZE_MAX / 2, EPS, 0);
  expect_fwd("cols = 0", UNSWAG_ERR_BAD_PARAM, B, x, w, y, rstd, 4, 0, EPS, 0);
  expect_bwd("cols = 0", UNSWAG_ERR_BAD_PARAM, B, dy, x, w, rin, dx, dw, 4, 0, 0);
  /* eps, weight_offset */
  expect_fwd("eps NaN", UNSWAG_ERR_BAD_PARAM, B, x, w, y, rstd, 4, 8, NAN, 0);
  expect_fwd("eps Inf", UNSWAG_ERR_BAD_PARAM, B, x, w, y, rstd, 4, 8, INFINITY, 0);
  expect_fwd("eps < 0", UNSWAG_ERR_BAD_PARAM, B, x, w, y, rstd, 4, 8, -1e-6f, 0);
  expect_fwd("eps = 0", UNSWAG_OK, B, x, w, y, rstd, 4, 8, 0.0f, 0);
  expect_fwd("weight_offset 1", UNSWAG_ERR_BAD_PARAM, B, x, w, y, rstd, 4, 8, EPS, 1.0f);
  expect_bwd("weight_offset 1", UNSWAG_ERR_BAD_PARAM, B, dy, x, w, rin, dx, dw, 4, 8, 1.0f);
  expect_fwd("weight_offset NaN", UNSWAG_ERR_BAD_PARAM, B, x, w, y, rstd, 4, 8, EPS, NAN);
  /* NULL pointers */
  expect_fwd("NULL x", UNSWAG_ERR_NULL_POINTER, B, NULL, w, y, rstd, 4, 8, EPS, 0);
  expect_fwd("NULL w", UNSWAG_ERR_NULL_POINTER, B, x, NULL, y, rstd, 4, 8, EPS, 0);
  expect_fwd("NULL y", UNSWAG_ERR_NULL_POINTER, B, x, w, NULL, rstd, 4, 8, EPS, 0);
  expect_fwd("NULL rstd", UNSWAG_ERR_NULL_POINTER, B, x, w, y, NULL, 4, 8, EPS, 0);
  expect_bwd("NULL dy", UNSWAG_ERR_NULL_POINTER, B, NULL, x, w, rin, dx, dw, 4, 8, 0);
  expect_bwd("NULL x", UNSWAG_ERR_NULL_POINTER, B, dy, NULL, w, rin, dx, dw, 4, 8, 0);
  expect_bwd("NULL w", UNSWAG_ERR_NULL_POINTER, B, dy, x, NULL, rin, dx, dw, 4, 8, 0);
  expect_bwd("NULL rstd", UNSWAG_ERR_NULL_POINTER, B, dy, x, w, NULL, dx, dw, 4, 8, 0);
  expect_bwd("NULL dx", UNSWAG_ERR_NULL_POINTER, B, dy, x, w, rin, NULL, dw, 4, 8, 0);
  expect_bwd("NULL dw", UNSWAG_ERR_NULL_POINTER, B, dy, x, w, rin, dx, NULL, 4, 8, 0);
  /* rows = 0: nothing to do, NULL fine */
  expect_fwd("rows = 0", UNSWAG_OK, B, NULL, NULL, NULL, NULL, 0, 8, EPS, 0);
  expect_bwd("rows = 0", UNSWAG_OK, B, NULL, NULL, NULL, NULL, NULL, NULL, 0, 8, 0);
  /* overlap: y shifted against x, rstd inside y, dx shifted against dy, dw inside dx */
  expect_fwd("y overlaps x", UNSWAG_ERR_BAD_PARAM, B, out_buf[0], w, out_buf[0] + 2, rstd, 4, 8,
             EPS, 0);
  expect_fwd("rstd inside y", UNSWAG_ERR_BAD_PARAM, B, x, w, y, (float *)(void *)(out_buf[0] + 16),
             4, 8, EPS, 0);
  expect_fwd("y == w", UNSWAG_ERR_BAD_PARAM, B, x, out_buf[0], out_buf[0], rstd, 1, 8, EPS, 0);
  expect_bwd("dx overlaps dy", UNSWAG_ERR_BAD_PARAM, B, out_buf[1] + 2, x, w, rin, dx, dw, 4, 8, 0);
  expect_bwd("dx == x", UNSWAG_ERR_BAD_PARAM, B, dy, out_buf[1], w, rin, dx, dw, 4, 8, 0);
  expect_bwd("dw inside dx", UNSWAG_ERR_BAD_PARAM, B, dy, x, w, rin, dx,
             (float *)(void *)(out_buf[1] + 8), 4, 8, 0);
  /* fp32 arrays must be aligned */
  expect_fwd("rstd unaligned", UNSWAG_ERR_BAD_POINTER, B, x, w, y,
             (float *)(void *)(out_buf[2] + 1), 4, 8, EPS, 0);
  expect_bwd("dw unaligned", UNSWAG_ERR_BAD_POINTER, B, dy, x, w, rin, dx,
             (float *)(void *)(out_buf[3] + 2), 4, 8, 0);
  /* workspace query */
  size_t bytes = 1;
  CHECK(unswag_rmsnorm_workspace_bytes(0, 100, &bytes) == UNSWAG_OK && bytes == 0,
        "workspace rows 0");
  CHECK(unswag_rmsnorm_workspace_bytes(5, 100, &bytes) == UNSWAG_OK && bytes == 400,
        "workspace 5 rows: %zu", bytes);
  CHECK(unswag_rmsnorm_workspace_bytes(4096, 10, &bytes) == UNSWAG_OK && bytes == 512 * 40,
        "workspace 4096 rows: %zu", bytes);
  CHECK(
      unswag_rmsnorm_workspace_bytes(1 << 20, 2048, &bytes) == UNSWAG_OK && bytes == 512 * 2048 * 4,
      "workspace 2^20 rows: %zu", bytes);
  CHECK(unswag_rmsnorm_workspace_bytes(100, SIZE_MAX / 8, &bytes) == UNSWAG_ERR_SIZE_OVERFLOW,
        "workspace overflow");
  CHECK(unswag_rmsnorm_workspace_bytes(100, 10, NULL) == UNSWAG_ERR_NULL_POINTER, "workspace NULL");
  if (!unswag_cuda_built()) {
    CHECK(unswag_rmsnorm_forward_cuda(B, x, w, y, rstd, 4, 8, EPS, 0, NULL) ==
              UNSWAG_ERR_CUDA_NOT_BUILT,
          "rmsnorm_forward_cuda without CUDA");
    CHECK(unswag_rmsnorm_backward_cuda(B, dy, x, w, rin, dx, dw, NULL, 0, 4, 8, 0, NULL) ==
              UNSWAG_ERR_CUDA_NOT_BUILT,
          "rmsnorm_backward_cuda without CUDA");
  }
}

int main(void) {
  rng_seed(0x853C49E6748FEA9Bull);
  check_bad_input();
  check_exhaustive(UNSWAG_F16);
  check_exhaustive(UNSWAG_BF16);
  check_f32_random();
  for (int d = 0; d < 3; ++d) {
    check_shapes(DTYPES[d]);
    check_in_place_and_accumulate(DTYPES[d]);
    check_threads(DTYPES[d]);
  }
  CHECK_SUMMARY("test_rmsnorm");
}

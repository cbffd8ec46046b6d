/*
 * Codebooks: exact derivatives, validation, the built-in tables and the L2
 * fitter (docs/design.md section 1).
 *
 * The fitter approximates f' by a piecewise-constant q with m = 2^bits pieces,
 * minimising  sum over pieces of  integral (f' - q)^2 w.  On a grid of G equal
 * cells it needs only three moments per cell, W = int w, S = int w f' and
 * Q = int w f'^2: a piece made of cells [j, i) has best level S/W and cost
 * Q - S^2/W, both O(1) from prefix sums.  A dynamic programme over the cells
 * then finds the partition of least total cost (the global optimum on the
 * grid).  Everything runs in double, in a fixed order, so a fit is
 * reproducible bit for bit (the built-in tables are checked against it).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- exact derivatives --------------------------------------------------- */

/* sigmoid(z) and sigmoid(-z) = 1 - sigmoid(z), from exp(-|z|) only, so
 * nothing overflows and the small one has no cancellation. */
static void sigmoid_pair(double z, double *s, double *sm) {
  double e = exp(-fabs(z));
  double big = 1.0 / (1.0 + e), small = e / (1.0 + e);
  *s = z >= 0 ? big : small;
  *sm = z >= 0 ? small : big;
}

double unswag_derivative(unswag_activation act, double x) {
  int smooth = act == UNSWAG_SILU || act == UNSWAG_GELU || act == UNSWAG_GELU_TANH;
  if (!smooth) return NAN;
  if (isinf(x)) return x > 0 ? 1.0 : 0.0; /* the limits; formulas give inf*0 */
  double s, sm;
  switch (act) {
    case UNSWAG_SILU: /* d/dx x s(x) = s (1 + x (1 - s)) */
      sigmoid_pair(x, &s, &sm);
      return s * (1.0 + x * sm);
    case UNSWAG_GELU: /* Phi(x) + x phi(x); erfc keeps the left tail exact */
      return 0.5 * erfc(-x * 0.70710678118654752440) +
             x * exp(-0.5 * x * x) * 0.39894228040143267794;
    default: {                                     /* gelu_tanh: 0.5 x (1 + tanh u) = x s(2u) */
      const double c = 0.79788456080286535588;     /* sqrt(2/pi) */
      if (fabs(x) > 1e6) return x > 0 ? 1.0 : 0.0; /* saturated; x^3 would overflow */
      double u = c * (x + 0.044715 * x * x * x);
      sigmoid_pair(2.0 * u, &s, &sm);
      /* 0.5 (1 + t) = s, 0.5 (1 - t^2) = 2 s sm, du/dx = c (1 + 3 * 0.044715 x^2) */
      return s + 2.0 * x * s * sm * c * (1.0 + 0.134145 * x * x);
    }
  }
}

/* ---- validation and built-in tables --------------------------------------- */

unswag_status unswag_codebook_validate(const unswag_codebook *cb) {
  if (!cb) return unswag_fail(UNSWAG_ERR_NULL_POINTER, "codebook is NULL");
  if (!unswag_bits_valid(cb->bits))
    return unswag_fail(UNSWAG_ERR_BAD_BITS, "codebook bits = %d (expected 1, 2, 4 or 8)", cb->bits);
  int m = 1 << cb->bits;
  for (int j = 0; j < m - 1; ++j) {
    if (!isfinite(cb->boundaries[j]))
      return unswag_fail(UNSWAG_ERR_BAD_CODEBOOK, "codebook boundary %d is not finite", j);
    if (j > 0 && !(cb->boundaries[j - 1] < cb->boundaries[j]))
      return unswag_fail(UNSWAG_ERR_BAD_CODEBOOK,
                         "codebook boundaries not strictly increasing at %d (%g >= %g)", j,
                         (double)cb->boundaries[j - 1], (double)cb->boundaries[j]);
  }
  for (int j = 0; j < m; ++j)
    if (!isfinite(cb->levels[j]))
      return unswag_fail(UNSWAG_ERR_BAD_CODEBOOK, "codebook level %d is not finite", j);
  return UNSWAG_OK;
}

unswag_status unswag_codebook_builtin(unswag_activation act, int bits, unswag_codebook *out) {
  if (!out) return unswag_fail(UNSWAG_ERR_NULL_POINTER, "codebook_builtin: out is NULL");
  int a = (int)act;
  if (a >= UNSWAG_RELU && a <= UNSWAG_HARDTANH)
    return unswag_fail(UNSWAG_ERR_BAD_ACTIVATION,
                       "%s is in the exact (relu) family: its 1-bit code is exact and needs "
                       "no codebook",
                       unswag_activation_name(act));
  if (a < UNSWAG_SILU || a > UNSWAG_GELU_TANH)
    return unswag_fail(UNSWAG_ERR_BAD_ACTIVATION, "unknown activation %d", a);
  if (!unswag_bits_valid(bits))
    return unswag_fail(UNSWAG_ERR_BAD_BITS, "bits = %d (smooth activations: 1, 2, 4 or 8)", bits);
  int log2bits = bits == 1 ? 0 : bits == 2 ? 1 : bits == 4 ? 2 : 3;
  *out = unswag_builtin_codebooks_[a - UNSWAG_SILU][log2bits];
  return UNSWAG_OK;
}

/* ---- the fitter: cell moments ---------------------------------------------- */

#define DEFAULT_GRID_CELLS 8192
#define MAX_GRID_CELLS ((size_t)1 << 22) /* 1 bit: the DP is linear in the cells */
#define DEFAULT_RANGE_SIGMAS 16.0
#define TAIL_SIGMAS 12.0 /* normal mass beyond range + 12 sigma: < e^-72 of the rest */
#define TAIL_PANELS 1024

typedef struct fit_ctx {
  unswag_derivative_fn deriv;
  void *user;
  double inv_sigma; /* normal weighting: 1/sigma; 0 for a histogram         */
  int bad;          /* the callback returned a non-finite value at bad_x    */
  double bad_x, bad_v;
} fit_ctx;

/* Adds scale * (mean over [a, b] of rho, rho f', rho f'^2) to m[0..2], the
 * mean by Simpson's rule on 4 panels; rho = exp(-z^2/2) (normal) or 1.
 * The weights are positive, so Cauchy-Schwarz (S^2 <= W Q) holds for the
 * sums as it does for the integrals: no piece gets a negative cost. */
static void add_cell_moments(fit_ctx *c, double a, double b, double scale, double m[3]) {
  static const double wt[5] = {1.0 / 12, 4.0 / 12, 2.0 / 12, 4.0 / 12, 1.0 / 12};
  double w = 0, s = 0, q = 0;
  for (int t = 0; t < 5; ++t) {
    double x = t == 4 ? b : a + (b - a) * (0.25 * t);
    double d = c->deriv(x, c->user);
    if (!isfinite(d) && !c->bad) {
      c->bad = 1;
      c->bad_x = x;
      c->bad_v = d;
    }
    double z = x * c->inv_sigma;
    double r = wt[t] * (c->inv_sigma > 0 ? exp(-0.5 * z * z) : 1.0);
    w += r;
    s += r * d;
    q += r * d * d;
  }
  m[0] += scale * w;
  m[1] += scale * s;
  m[2] += scale * q;
}

/* Normal weighting: cell i of [lo, hi] gets the moments of its own interval;
 * the outermost cells also take the tails beyond lo and hi (integrated out to
 * TAIL_SIGMAS further), so the end pieces get the right mass and mean. */
static void normal_moments(fit_ctx *c, double lo, double h, size_t g, double sigma,
                           double (*cell)[3]) {
  const double norm = 0.39894228040143267794 / sigma; /* 1 / (sigma sqrt(2 pi)) */
  for (size_t i = 0; i < g; ++i) {
    double a = lo + h * (double)i, b = lo + h * (double)(i + 1);
    add_cell_moments(c, a, b, (b - a) * norm, cell[i]);
  }
  double hi = lo + h * (double)g, t = TAIL_SIGMAS * sigma / TAIL_PANELS;
  for (int p = 0; p < TAIL_PANELS; ++p) {
    add_cell_moments(c, lo - t * (p + 1), lo - t * p, t * norm, cell[0]);
    add_cell_moments(c, hi + t * p, hi + t * (p + 1), t * norm, cell[g - 1]);
  }
}

/* Histogram weighting: density counts[j] / total / bin width, constant on each
 * bin.  Each cell is split at the bin edges it crosses so the quadrature never
 * straddles a jump; total work is O(cells + bins). */
static void histogram_moments(fit_ctx *c, const unswag_fit_options *o, double total, double lo,
                              double h, size_t g, double (*cell)[3]) {
  double bw = (o->hist_hi - o->hist_lo) / (double)o->hist_bins;
  double nb = (double)o->hist_bins;
  for (size_t i = 0; i < g; ++i) {
    double a = lo + h * (double)i, b = lo + h * (double)(i + 1);
    /* candidate bins, widened by one each side and clipped below */
    double t0 = floor((a - o->hist_lo) / bw) - 1, t1 = ceil((b - o->hist_lo) / bw) + 1;
    t0 = t0 < 0 ? 0 : t0 > nb ? nb : t0;
    t1 = t1 < 0 ? 0 : t1 > nb ? nb : t1;
    for (size_t j = (size_t)t0; j < (size_t)t1; ++j) {
      if (o->hist_counts[j] == 0) continue;
      double blo = o->hist_lo + bw * (double)j;
      double bhi = j + 1 == o->hist_bins ? o->hist_hi : o->hist_lo + bw * (double)(j + 1);
      double sa = a > blo ? a : blo, sb = b < bhi ? b : bhi;
      if (sb > sa)
        add_cell_moments(c, sa, sb, o->hist_counts[j] / total * ((sb - sa) / bw), cell[i]);
    }
  }
}

/* ---- the fitter: dynamic programme ------------------------------------------ */

/* Cost of one piece made of cells [j, i): weighted sum of squares about its
 * mean.  Zero weight: cost 0 (never divide by zero); tiny negative values
 * from cancellation are clamped. */
static inline double piece_cost(const double *pw, const double *ps, const double *pq, size_t j,
                                size_t i) {
  double w = pw[i] - pw[j];
  if (!(w > 0)) return 0;
  double s = ps[i] - ps[j];
  double c = (pq[i] - pq[j]) - s * s / w;
  return c > 0 ? c : 0;
}

/*
 * D_k(i) = least cost of cells [0, i) in k pieces = min_j D_{k-1}(j) + C(j, i).
 *
 * Why not the divide-and-conquer or Knuth speed-ups: they need C to satisfy
 * the quadrangle inequality, which holds for 1-D k-means (values sorted) but
 * not here, because f' is not monotone in x (silu' dips below 0 and overshoots
 * 1; a user's f' can be anything).  Cells with f' = 0, 1, 0 and unit weight:
 * C(0,2) + C(1,3) = 1 > C(0,3) + C(1,2) = 2/3.  So this is the plain DP,
 * exact for any cost, made fast by skipping only candidates j that provably
 * cannot beat the best found so far:
 *  - D_{k-1}(j) is non-decreasing in j and C >= 0, so when scanning j up,
 *    once D_{k-1}(j) >= best no larger j can win;
 *  - C is superadditive (splitting a piece never costs more:
 *    C(j', i) >= C(j', j) + C(j, i)), so every j' <= j has
 *    D_{k-1}(j') + C(j', i) >= D_k(j) + C(j, i); scanning j down, once that
 *    bound reaches best no smaller j can win.
 * The scan starts at the previous i's optimum, which is usually optimal or
 * close, so it visits a few pieces' worth of cells: about 2 G^2 cost
 * evaluations at 8 bits (1e8 on the default grid, against 9e9 for the
 * unpruned DP, which gives the same tables bit for bit).  Worst case
 * O(m G^2).  arg keeps each row's optimum for the backtrack.
 */
static void dp_partition(const double *pw, const double *ps, const double *pq, size_t g, int m,
                         double *prev, double *cur, uint32_t *arg, size_t *cuts, double *total) {
  for (size_t i = 1; i + (size_t)(m - 1) <= g; ++i) prev[i] = piece_cost(pw, ps, pq, 0, i);
  for (int k = 2; k <= m; ++k) {
    uint32_t *ak = arg + (size_t)(k - 2) * (g + 1);
    size_t jmin = (size_t)k - 1;         /* k - 1 pieces need k - 1 cells      */
    size_t ilo = k == m ? g : (size_t)k; /* the last row needs only i = g      */
    for (size_t i = ilo; i + (size_t)(m - k) <= g; ++i) {
      size_t j0 = i > ilo ? ak[i - 1] : i - 1;
      double best = prev[j0] + piece_cost(pw, ps, pq, j0, i);
      size_t bj = j0;
      for (size_t j = j0 + 1; j < i && prev[j] < best; ++j) {
        double v = prev[j] + piece_cost(pw, ps, pq, j, i);
        if (v < best) {
          best = v;
          bj = j;
        }
      }
      for (size_t j = j0; j > jmin;) {
        --j;
        double c = piece_cost(pw, ps, pq, j, i);
        /* D_k(j) is known for k <= j < i, except in the last row */
        double lower = c + (j >= (size_t)k && k < m ? cur[j] : 0.0);
        if (lower >= best) break;
        double v = prev[j] + c;
        if (v < best) {
          best = v;
          bj = j;
        }
      }
      cur[i] = best;
      ak[i] = (uint32_t)bj;
    }
    double *t = prev;
    prev = cur;
    cur = t;
  }
  *total = prev[g];
  cuts[m] = g;
  for (int k = m; k >= 2; --k) cuts[k - 1] = arg[(size_t)(k - 2) * (g + 1) + cuts[k]];
  cuts[0] = 0;
}

/* ---- the fitter: public entry --------------------------------------------------- */

/* The most cells a fit at `bits` accepts.  dp_partition's worst case (no
 * candidate pruned) is (m - 2) rows of at most G^2 / 2 cost evaluations each,
 * plus O(G) for the first and last rows; these caps hold (m - 2) G^2 / 2 to
 * at most 2^33 (tens of seconds at worst; the default grid of 8192 cells fits
 * 8 bits in about 0.4 s, a random f' in 1.4 s).  unswag.h documents them. */
static size_t max_grid_cells(int bits) {
  switch (bits) {
    case 1: return MAX_GRID_CELLS;   /* m - 2 = 0: linear */
    case 2: return (size_t)1 << 16;  /* 2 rows x 2^31 */
    case 4: return (size_t)1 << 15;  /* 14 rows x 2^29 < 2^33 */
    default: return (size_t)1 << 13; /* 254 rows x 2^25 < 2^33 */
  }
}

/* The grid and weighting a fit uses, from validated options. */
typedef struct fit_plan {
  unswag_fit_options o; /* copy of the options (zeros = defaults)       */
  double sigma;         /* normal weighting                             */
  double total;         /* histogram: sum of counts                     */
  double lo, h;         /* grid: cell i is [lo + i h, lo + (i + 1) h]    */
  size_t g;             /* cells                                        */
  int m;                /* pieces                                       */
} fit_plan;

static unswag_status plan_fit(const unswag_fit_options *opts, int bits, fit_plan *p) {
  memset(p, 0, sizeof *p);
  if (opts) p->o = *opts;
  const unswag_fit_options *o = &p->o;
  p->m = 1 << bits;
  if (!(o->sigma >= 0) || isinf(o->sigma))
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "codebook_fit: sigma = %g (need finite >= 0)",
                       o->sigma);
  p->sigma = o->sigma > 0 ? o->sigma : 1.0;
  p->g = o->grid_cells ? o->grid_cells : DEFAULT_GRID_CELLS;
  if (p->g < (size_t)p->m || p->g > max_grid_cells(bits))
    return unswag_fail(UNSWAG_ERR_BAD_PARAM,
                       "codebook_fit: grid_cells = %zu (need %d <= cells <= %zu at %d bits, "
                       "which bounds the fit's time)",
                       p->g, p->m, max_grid_cells(bits), bits);
  if (!(o->range >= 0) || isinf(o->range))
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "codebook_fit: range = %g (need finite > 0)",
                       o->range);
  if (o->hist_counts) {
    if (o->hist_bins == 0)
      return unswag_fail(UNSWAG_ERR_BAD_PARAM, "codebook_fit: histogram with 0 bins");
    if (!isfinite(o->hist_lo) || !isfinite(o->hist_hi) || !(o->hist_lo < o->hist_hi) ||
        !isfinite(o->hist_hi - o->hist_lo))
      return unswag_fail(UNSWAG_ERR_BAD_PARAM,
                         "codebook_fit: histogram range [%g, %g] (need finite lo < hi)", o->hist_lo,
                         o->hist_hi);
    for (size_t j = 0; j < o->hist_bins; ++j) {
      double v = o->hist_counts[j];
      if (!(v >= 0) || isinf(v))
        return unswag_fail(UNSWAG_ERR_BAD_PARAM,
                           "codebook_fit: histogram count %zu = %g (need finite >= 0)", j, v);
      p->total += v;
    }
    if (!(p->total > 0) || isinf(p->total))
      return unswag_fail(UNSWAG_ERR_BAD_PARAM,
                         "codebook_fit: histogram counts sum to %g (need finite > 0)", p->total);
  }
  /* [-range, range], else the histogram's range, else 16 sigma; with lo, hi
   * and g powers of two every cell edge is exact in float */
  double lo = -DEFAULT_RANGE_SIGMAS * p->sigma, hi = DEFAULT_RANGE_SIGMAS * p->sigma;
  if (o->range > 0) {
    lo = -o->range;
    hi = o->range;
  } else if (o->hist_counts) {
    lo = o->hist_lo;
    hi = o->hist_hi;
  }
  p->lo = lo;
  p->h = (hi - lo) / (double)p->g;
  if (!(p->h > 0) || !isfinite(p->h))
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "codebook_fit: grid [%g, %g] in %zu cells", lo, hi,
                       p->g);
  return UNSWAG_OK;
}

/* Moments, DP and the book, with scratch from the caller: cell[g][3],
 * pre[5 (g + 1)], arg[(m - 1) (g + 1)], cuts[m + 1]. */
static unswag_status run_fit(unswag_derivative_fn deriv, void *user, int bits, const fit_plan *p,
                             double (*cell)[3], double *pre, uint32_t *arg, size_t *cuts,
                             unswag_codebook *cb) {
  size_t g = p->g;
  fit_ctx c = {deriv, user, p->o.hist_counts ? 0.0 : 1.0 / p->sigma, 0, 0, 0};
  if (p->o.hist_counts) histogram_moments(&c, &p->o, p->total, p->lo, p->h, g, cell);
  else normal_moments(&c, p->lo, p->h, g, p->sigma, cell);
  if (c.bad)
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "codebook_fit: deriv(%.17g) returned %g", c.bad_x,
                       c.bad_v);

  double *pw = pre, *ps = pre + (g + 1), *pq = pre + 2 * (g + 1);
  pw[0] = ps[0] = pq[0] = 0;
  for (size_t i = 0; i < g; ++i) {
    pw[i + 1] = pw[i] + cell[i][0];
    ps[i + 1] = ps[i] + cell[i][1];
    pq[i + 1] = pq[i] + cell[i][2];
  }
  /* W and Q add non-negative terms and |S| <= (W + Q) / 2: two checks cover all */
  if (!isfinite(pq[g]) || !isfinite(pw[g]))
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "codebook_fit: weighted f'^2 overflows (%g)", pq[g]);
  if (!(pw[g] > 0))
    return unswag_fail(UNSWAG_ERR_BAD_PARAM, "codebook_fit: no weight inside the grid [%g, %g]",
                       p->lo, p->lo + p->h * (double)g);

  double cost;
  dp_partition(pw, ps, pq, g, p->m, pre + 3 * (g + 1), pre + 4 * (g + 1), arg, cuts, &cost);

  memset(cb, 0, sizeof *cb);
  cb->bits = bits;
  for (int k = 0; k < p->m; ++k) {
    size_t j = cuts[k], i = cuts[k + 1];
    if (k > 0) cb->boundaries[k - 1] = (float)(p->lo + p->h * (double)j);
    double w = pw[i] - pw[j], level;
    if (w > 0) {
      level = (ps[i] - ps[j]) / w;
    } else { /* no weight (empty bins): any level is optimal; take f' at the middle */
      double x = p->lo + p->h * 0.5 * (double)(i + j);
      level = deriv(x, user);
      if (!isfinite(level))
        return unswag_fail(UNSWAG_ERR_BAD_PARAM, "codebook_fit: deriv(%.17g) returned %g", x,
                           level);
    }
    cb->levels[k] = (float)level;
  }
  cb->rms_error = sqrt(cost / pw[g]);
  /* float rounding can merge the edges of a grid far from 0, or overflow */
  if (unswag_codebook_validate(cb) != UNSWAG_OK)
    return unswag_fail(UNSWAG_ERR_BAD_PARAM,
                       "codebook_fit: grid [%g, %g] in %zu cells gives boundaries or levels "
                       "that are not distinct finite floats",
                       p->lo, p->lo + p->h * (double)g, g);
  return UNSWAG_OK;
}

unswag_status unswag_codebook_fit(unswag_derivative_fn deriv, void *user, int bits,
                                  const unswag_fit_options *opts, unswag_codebook *out) {
  if (!deriv) return unswag_fail(UNSWAG_ERR_NULL_POINTER, "codebook_fit: deriv is NULL");
  if (!out) return unswag_fail(UNSWAG_ERR_NULL_POINTER, "codebook_fit: out is NULL");
  if (!unswag_bits_valid(bits))
    return unswag_fail(UNSWAG_ERR_BAD_BITS, "codebook_fit: bits = %d (expected 1, 2, 4 or 8)",
                       bits);
  fit_plan p;
  unswag_status st = plan_fit(opts, bits, &p);
  if (st != UNSWAG_OK) return st;

  size_t g = p.g, rows = (size_t)(p.m - 1);
  double(*cell)[3] = calloc(g, sizeof *cell);
  double *pre = malloc(5 * (g + 1) * sizeof *pre);
  uint32_t *arg =
      rows <= SIZE_MAX / sizeof(uint32_t) / (g + 1) ? malloc(rows * (g + 1) * sizeof *arg) : NULL;
  size_t *cuts = malloc((size_t)(p.m + 1) * sizeof *cuts);
  unswag_codebook cb; /* *out is written only on success */
  if (!cell || !pre || !arg || !cuts)
    st = unswag_fail(UNSWAG_ERR_NO_MEMORY,
                     "codebook_fit: cannot allocate scratch for %zu cells x %d pieces", g, p.m);
  else st = run_fit(deriv, user, bits, &p, cell, pre, arg, cuts, &cb);
  free(cell);
  free(pre);
  free(arg);
  free(cuts);
  if (st == UNSWAG_OK) *out = cb;
  return st;
}

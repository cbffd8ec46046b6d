/*
 * test_codebook - derivatives, built-in tables, the fitter and validation.
 *
 * The fitter is checked against an independent brute-force O(m G^2) DP on
 * cell moments the test computes itself: with a histogram weighting whose
 * bins are the grid cells and an f' that is linear on each cell, Simpson's
 * rule is exact, so both sides see the same cost up to rounding.
 *
 * Prints each failure and a final "test_codebook: N checks passed"; exits
 * non-zero on any failure.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_data.h"
#include "unswag.h"

#define PI 3.14159265358979323846

static int n_pass, n_fail;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (cond) {                                            \
      ++n_pass;                                            \
    } else {                                               \
      ++n_fail;                                            \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);          \
      printf(__VA_ARGS__);                                 \
      printf("  [last error: %s]\n", unswag_last_error()); \
    }                                                      \
  } while (0)

static const unswag_activation smooth[3] = {UNSWAG_SILU, UNSWAG_GELU, UNSWAG_GELU_TANH};
static const int all_bits[4] = {1, 2, 4, 8};

static double act_deriv(double x, void *user) {
  return unswag_derivative(*(const unswag_activation *)user, x);
}

static double identity_deriv(double x, void *user) {
  (void)user;
  return x;
}

/* ---- derivatives ------------------------------------------------------------ */

static double act_value(unswag_activation act, double x) {
  if (act == UNSWAG_SILU) return x / (1.0 + exp(-x));
  if (act == UNSWAG_GELU) return 0.5 * x * erfc(-x / sqrt(2.0));
  return 0.5 * x * (1.0 + tanh(sqrt(2.0 / PI) * (x + 0.044715 * x * x * x)));
}

static void test_derivative(void) {
  for (int a = 0; a < 3; ++a) {
    for (double x = -9.0; x <= 9.0; x += 0.375) {
      double h = 1e-5, num = (act_value(smooth[a], x + h) - act_value(smooth[a], x - h)) / (2 * h);
      double d = unswag_derivative(smooth[a], x);
      CHECK(fabs(d - num) < 1e-8, "%s'(%g) = %.17g, central difference %.17g",
            unswag_activation_name(smooth[a]), x, d, num);
      /* f(x) - f(-x) = x for all three, so f'(x) + f'(-x) = 1 */
      double sym = d + unswag_derivative(smooth[a], -x);
      CHECK(fabs(sym - 1.0) < 1e-14, "%s'(%g) + %s'(-x) = %.17g, expected 1",
            unswag_activation_name(smooth[a]), x, unswag_activation_name(smooth[a]), sym);
    }
    CHECK(unswag_derivative(smooth[a], INFINITY) == 1.0, "%s'(inf) != 1",
          unswag_activation_name(smooth[a]));
    CHECK(unswag_derivative(smooth[a], -INFINITY) == 0.0, "%s'(-inf) != 0",
          unswag_activation_name(smooth[a]));
    CHECK(unswag_derivative(smooth[a], 1e300) == 1.0 && unswag_derivative(smooth[a], -1e300) == 0.0,
          "%s' at +-1e300 not 1, 0", unswag_activation_name(smooth[a]));
    CHECK(isnan(unswag_derivative(smooth[a], NAN)), "%s'(NaN) not NaN",
          unswag_activation_name(smooth[a]));
  }
  const int others[] = {UNSWAG_RELU, UNSWAG_LEAKY_RELU, UNSWAG_RELU6, UNSWAG_HARDTANH, 7, 99, -1};
  for (size_t i = 0; i < sizeof others / sizeof others[0]; ++i)
    CHECK(isnan(unswag_derivative((unswag_activation)others[i], 0.5)),
          "derivative of activation %d not NaN", others[i]);
}

/* ---- built-in tables ------------------------------------------------------------- */

static void test_builtin_tables(void) {
  for (int a = 0; a < 3; ++a) {
    double prev_rms = INFINITY;
    for (int b = 0; b < 4; ++b) {
      const char *name = unswag_activation_name(smooth[a]);
      int bits = all_bits[b], m = 1 << bits;
      unswag_codebook table, fresh;
      unswag_activation act = smooth[a];
      CHECK(unswag_codebook_builtin(act, bits, &table) == UNSWAG_OK, "builtin %s/%d", name, bits);
      CHECK(unswag_codebook_validate(&table) == UNSWAG_OK, "builtin %s/%d invalid", name, bits);
      CHECK(unswag_codebook_fit(act_deriv, &act, bits, NULL, &fresh) == UNSWAG_OK, "fit %s/%d",
            name, bits);
      /* bit for bit: the table is the fitter's output, printed exactly */
      CHECK(table.bits == bits && fresh.bits == bits, "%s/%d bits field", name, bits);
      CHECK(!memcmp(table.boundaries, fresh.boundaries, (size_t)(m - 1) * sizeof(float)),
            "%s/%d boundaries differ from a fresh fit (regenerate the tables)", name, bits);
      CHECK(!memcmp(table.levels, fresh.levels, (size_t)m * sizeof(float)),
            "%s/%d levels differ from a fresh fit (regenerate the tables)", name, bits);
      CHECK(!memcmp(&table.rms_error, &fresh.rms_error, sizeof(double)),
            "%s/%d rms_error %.17g, fresh fit %.17g", name, bits, table.rms_error, fresh.rms_error);
      CHECK(table.rms_error > 0 && table.rms_error < prev_rms,
            "%s: rms at %d bits (%g) not below the previous (%g)", name, bits, table.rms_error,
            prev_rms);
      prev_rms = table.rms_error;
      /* f'(x) + f'(-x) = 1 and the weighting is even, so the mirror image of
       * an optimum (x -> -x, level -> 1 - level) is an optimum too.  silu's is
       * symmetric; gelu's at 4 bits is one of a mirror pair (two pieces for
       * the dip at x < 0, one for the overshoot), so only silu is checked. */
      if (act == UNSWAG_SILU) {
        int sym = 1;
        for (int j = 0; j < m - 1; ++j) sym &= table.boundaries[j] == -table.boundaries[m - 2 - j];
        for (int j = 0; j < m; ++j)
          sym &= fabs(table.levels[j] + table.levels[m - 1 - j] - 1.0) < 1e-6;
        CHECK(sym, "%s/%d not symmetric", name, bits);
      }
    }
  }
}

/* ---- the fitter against a brute-force DP ----------------------------------------- */

/* Cells [j, i) from prefix moments: weighted sum of squares about the mean. */
static double seg_cost(const double *pw, const double *ps, const double *pq, int j, int i) {
  double w = pw[i] - pw[j];
  if (!(w > 0)) return 0;
  double s = ps[i] - ps[j], c = (pq[i] - pq[j]) - s * s / w;
  return c > 0 ? c : 0;
}

/* The plain DP: every (pieces, end, start), no pruning. */
static double brute_force_cost(const double *pw, const double *ps, const double *pq, int g, int m) {
  double *prev = malloc((size_t)(g + 1) * sizeof *prev);
  double *cur = malloc((size_t)(g + 1) * sizeof *cur);
  if (!prev || !cur) abort();
  for (int i = 1; i <= g; ++i) prev[i] = seg_cost(pw, ps, pq, 0, i);
  for (int k = 2; k <= m; ++k) {
    for (int i = k; i <= g; ++i) {
      double best = INFINITY;
      for (int j = k - 1; j < i; ++j) {
        double v = prev[j] + seg_cost(pw, ps, pq, j, i);
        if (v < best) best = v;
      }
      cur[i] = best;
    }
    double *t = prev;
    prev = cur;
    cur = t;
  }
  double r = prev[g];
  free(prev);
  free(cur);
  return r;
}

/* Grid cell index of each boundary (0 if one is not a cell edge, to float
 * precision). */
static int book_cuts(const unswag_codebook *cb, double lo, double h, int g, int *cuts) {
  int m = 1 << cb->bits;
  cuts[0] = 0;
  cuts[m] = g;
  for (int p = 1; p < m; ++p) {
    double t = ((double)cb->boundaries[p - 1] - lo) / h;
    cuts[p] = (int)lround(t);
    if (fabs(t - cuts[p]) > 1e-3 || cuts[p] <= cuts[p - 1] || cuts[p] >= g) return 0;
  }
  return 1;
}

static double cuts_cost(const double *pw, const double *ps, const double *pq, const int *cuts,
                        int m) {
  double c = 0;
  for (int p = 0; p < m; ++p) c += seg_cost(pw, ps, pq, cuts[p], cuts[p + 1]);
  return c;
}

/* f' linear on each cell, from knot values v[0..g] at the cell edges. */
typedef struct pwlin {
  double lo, h;
  int g;
  const double *v;
} pwlin;

static double pwlin_deriv(double x, void *user) {
  const pwlin *p = user;
  double t = (x - p->lo) / p->h;
  int k = (int)floor(t);
  k = k < 0 ? 0 : k >= p->g ? p->g - 1 : k;
  return p->v[k] + (p->v[k + 1] - p->v[k]) * (t - k);
}

/* Random non-monotone f' and random weights with empty cells: the fast DP
 * must reach the brute-force optimum, levels must be weighted means, and
 * moving any boundary by one cell must not lower the cost. */
static void test_fit_vs_brute_force(void) {
  enum { G = 512 };
  const double lo = -4.0, hi = 4.0, h = (hi - lo) / G;
  for (int trial = 0; trial < 6; ++trial) {
    double v[G + 1], counts[G], total = 0;
    for (int i = 0; i <= G; ++i)
      v[i] = trial % 2 ? sin(0.3 * i) + 0.3 * rng_unit() : 2 * rng_unit() - 1;
    for (int i = 0; i < G; ++i) {
      counts[i] = rng_unit() < 0.2 ? 0.0 : rng_unit();
      total += counts[i];
    }
    double pw[G + 1] = {0}, ps[G + 1] = {0}, pq[G + 1] = {0};
    for (int i = 0; i < G; ++i) { /* exact moments of a linear f' */
      double p = counts[i] / total, a = v[i], b = v[i + 1];
      pw[i + 1] = pw[i] + p;
      ps[i + 1] = ps[i] + p * (a + b) / 2;
      pq[i + 1] = pq[i] + p * (a * a + a * b + b * b) / 3;
    }
    pwlin f = {lo, h, G, v};
    unswag_fit_options o = {0};
    o.hist_counts = counts;
    o.hist_bins = G;
    o.hist_lo = lo;
    o.hist_hi = hi;
    o.grid_cells = G;
    for (int b = 0; b < 4; ++b) {
      int bits = all_bits[b], m = 1 << bits, cuts[257];
      if (m >= G) continue;
      unswag_codebook cb;
      CHECK(unswag_codebook_fit(pwlin_deriv, &f, bits, &o, &cb) == UNSWAG_OK,
            "pwlin trial %d bits %d fit", trial, bits);
      if (!book_cuts(&cb, lo, h, G, cuts)) {
        CHECK(0, "pwlin trial %d bits %d: boundaries not on cell edges", trial, bits);
        continue;
      }
      double best = brute_force_cost(pw, ps, pq, G, m);
      double got = cuts_cost(pw, ps, pq, cuts, m);
      CHECK(fabs(got - best) <= 1e-12 + 1e-9 * best,
            "pwlin trial %d bits %d: fit cost %.17g, brute force %.17g", trial, bits, got, best);
      CHECK(fabs(cb.rms_error * cb.rms_error * pw[G] - best) <= 1e-12 + 1e-9 * best,
            "pwlin trial %d bits %d: rms_error^2 %.17g, brute force %.17g", trial, bits,
            cb.rms_error * cb.rms_error, best / pw[G]);
      int means_ok = 1, local_ok = 1;
      for (int p = 0; p < m; ++p) {
        double w = pw[cuts[p + 1]] - pw[cuts[p]];
        if (w > 0) {
          double mean = (ps[cuts[p + 1]] - ps[cuts[p]]) / w;
          means_ok &= fabs(cb.levels[p] - mean) <= 1e-6 * (1 + fabs(mean));
        } else { /* no weight: f' at the middle of the piece */
          double mid = lo + h * 0.5 * (cuts[p] + cuts[p + 1]);
          means_ok &= cb.levels[p] == (float)pwlin_deriv(mid, &f);
        }
      }
      for (int p = 1; p < m; ++p)
        for (int d = -1; d <= 1; d += 2) {
          int save = cuts[p];
          cuts[p] += d;
          if (cuts[p] > cuts[p - 1] && cuts[p] < cuts[p + 1])
            local_ok &= cuts_cost(pw, ps, pq, cuts, m) >= got * (1 - 1e-12);
          cuts[p] = save;
        }
      CHECK(means_ok, "pwlin trial %d bits %d: levels are not the weighted means", trial, bits);
      CHECK(local_ok, "pwlin trial %d bits %d: moving a boundary one cell lowers the cost", trial,
            bits);
    }
  }
}

/* The real case: silu' under a normal weighting on a coarse grid, moments by
 * 5-point Gauss-Legendre (not the fitter's rule), so costs agree to ~1e-9. */
static void test_fit_silu_brute_force(void) {
  enum { G = 256 };
  const double range = 8.0, h = 2 * range / G;
  static const double gx[5] = {-0.9061798459386640, -0.5384693101056831, 0.0, 0.5384693101056831,
                               0.9061798459386640};
  static const double gw[5] = {0.2369268850561891, 0.4786286704993665, 0.5688888888888889,
                               0.4786286704993665, 0.2369268850561891};
  double pw[G + 1] = {0}, ps[G + 1] = {0}, pq[G + 1] = {0};
  for (int i = 0; i < G; ++i) {
    double mid = -range + h * (i + 0.5), w = 0, s = 0, q = 0;
    for (int t = 0; t < 5; ++t) {
      double x = mid + 0.5 * h * gx[t];
      double r = 0.5 * h * gw[t] * exp(-0.5 * x * x) / sqrt(2 * PI);
      double d = unswag_derivative(UNSWAG_SILU, x);
      w += r;
      s += r * d;
      q += r * d * d;
    }
    pw[i + 1] = pw[i] + w;
    ps[i + 1] = ps[i] + s;
    pq[i + 1] = pq[i] + q;
  }
  unswag_activation act = UNSWAG_SILU;
  unswag_fit_options o = {0};
  o.grid_cells = G;
  o.range = range;
  for (int b = 0; b < 3; ++b) {
    int bits = all_bits[b], m = 1 << bits, cuts[17];
    unswag_codebook cb;
    CHECK(unswag_codebook_fit(act_deriv, &act, bits, &o, &cb) == UNSWAG_OK, "silu G=%d bits %d", G,
          bits);
    if (!book_cuts(&cb, -range, h, G, cuts)) {
      CHECK(0, "silu bits %d: boundaries not on cell edges", bits);
      continue;
    }
    double best = brute_force_cost(pw, ps, pq, G, m), got = cuts_cost(pw, ps, pq, cuts, m);
    CHECK(fabs(got - best) <= 1e-7 * best, "silu bits %d: fit cost %.17g, brute force %.17g", bits,
          got, best);
    /* the two quadratures differ by ~1e-10 in Q; the cost Q - S^2/W is ~1e-3
     * of Q at 4 bits, so compare the rms loosely */
    CHECK(fabs(cb.rms_error - sqrt(best / pw[G])) <= 1e-5 * cb.rms_error,
          "silu bits %d: rms %.17g, brute force %.17g", bits, cb.rms_error, sqrt(best / pw[G]));
  }
}

/* Bins that straddle cells (37 bins over [-3.3, 2.9], a grid of 100 cells
 * over [-3, 3]): each cell must get exactly the mass of its bin pieces, the
 * mass outside the grid ignored.  With f' = x the moments are exact. */
static void test_histogram_straddling(void) {
  enum { BINS = 37, G = 100 };
  const double hlo = -3.3, hhi = 2.9, bw = (hhi - hlo) / BINS, range = 3.0, h = 2 * range / G;
  double counts[BINS], total = 0;
  for (int j = 0; j < BINS; ++j) {
    counts[j] = j % 5 == 2 ? 0.0 : 0.5 + rng_unit();
    total += counts[j];
  }
  double pw[G + 1] = {0}, ps[G + 1] = {0}, pq[G + 1] = {0};
  for (int i = 0; i < G; ++i) {
    double a = -range + h * i, b = -range + h * (i + 1), w = 0, s = 0, q = 0;
    for (int j = 0; j < BINS; ++j) {
      double u = fmax(a, hlo + bw * j), v = fmin(b, hlo + bw * (j + 1));
      if (v <= u) continue;
      double dens = counts[j] / total / bw;
      w += dens * (v - u);
      s += dens * (v * v - u * u) / 2;
      q += dens * (v * v * v - u * u * u) / 3;
    }
    pw[i + 1] = pw[i] + w;
    ps[i + 1] = ps[i] + s;
    pq[i + 1] = pq[i] + q;
  }
  unswag_fit_options o = {0};
  o.hist_counts = counts;
  o.hist_bins = BINS;
  o.hist_lo = hlo;
  o.hist_hi = hhi;
  o.range = range;
  o.grid_cells = G;
  for (int b = 0; b < 3; ++b) {
    int bits = all_bits[b], m = 1 << bits, cuts[17];
    unswag_codebook cb;
    CHECK(unswag_codebook_fit(identity_deriv, NULL, bits, &o, &cb) == UNSWAG_OK,
          "straddling bins, bits %d", bits);
    if (!book_cuts(&cb, -range, h, G, cuts)) {
      CHECK(0, "straddling bins, bits %d: boundaries not on cell edges", bits);
      continue;
    }
    double best = brute_force_cost(pw, ps, pq, G, m), got = cuts_cost(pw, ps, pq, cuts, m);
    CHECK(fabs(got - best) <= 1e-9 * best && fabs(cb.rms_error - sqrt(best / pw[G])) <= 1e-9,
          "straddling bins, bits %d: cost %.17g, brute force %.17g, rms %.17g vs %.17g", bits, got,
          best, cb.rms_error, sqrt(best / pw[G]));
    int means_ok = 1;
    for (int k = 0; k < m; ++k) {
      double mean = (ps[cuts[k + 1]] - ps[cuts[k]]) / (pw[cuts[k + 1]] - pw[cuts[k]]);
      means_ok &= fabs(cb.levels[k] - mean) <= 1e-6 * (1 + fabs(mean));
    }
    CHECK(means_ok, "straddling bins, bits %d: levels are not the weighted means", bits);
  }
}

/* ---- options: sigma, tails, histograms ----------------------------------------------- */

static void test_sigma_and_tails(void) {
  /* f' = x is scale-covariant: at sigma 2 every number doubles, exactly
   * (the grid, the weights and the DP decisions scale by powers of two). */
  for (int b = 0; b < 4; ++b) {
    int bits = all_bits[b], m = 1 << bits, same = 1;
    unswag_fit_options o1 = {0}, o2 = {0};
    o1.grid_cells = o2.grid_cells = 2048;
    o2.sigma = 2.0;
    unswag_codebook c1, c2;
    CHECK(unswag_codebook_fit(identity_deriv, NULL, bits, &o1, &c1) == UNSWAG_OK &&
              unswag_codebook_fit(identity_deriv, NULL, bits, &o2, &c2) == UNSWAG_OK,
          "f'=x bits %d", bits);
    for (int j = 0; j < m - 1; ++j) same &= c2.boundaries[j] == 2 * c1.boundaries[j];
    for (int j = 0; j < m; ++j) same &= c2.levels[j] == 2 * c1.levels[j];
    CHECK(same && c2.rms_error == 2 * c1.rms_error, "f'=x bits %d: sigma 2 is not sigma 1 x 2",
          bits);
  }
  /* A grid of only [-1, 1]: the end cells must carry the tails.  One bit
   * splits at 0 with levels -+E|x| = -+sqrt(2/pi), error sqrt(1 - 2/pi). */
  unswag_fit_options o = {0};
  o.range = 1.0;
  o.grid_cells = 64;
  unswag_codebook cb;
  CHECK(unswag_codebook_fit(identity_deriv, NULL, 1, &o, &cb) == UNSWAG_OK, "tails fit");
  CHECK(cb.boundaries[0] == 0.0f, "tails: boundary %g, expected 0", cb.boundaries[0]);
  CHECK(fabs(cb.levels[1] - sqrt(2 / PI)) < 1e-6 && fabs(cb.levels[0] + sqrt(2 / PI)) < 1e-6,
        "tails: levels %.9g %.9g, expected -+%.9g", cb.levels[0], cb.levels[1], sqrt(2 / PI));
  CHECK(fabs(cb.rms_error - sqrt(1 - 2 / PI)) < 1e-6, "tails: rms %.9g, expected %.9g",
        cb.rms_error, sqrt(1 - 2 / PI));
}

static double normal_cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

static void test_histograms(void) {
  /* The normal density binned finely (a bin a grid cell) must give nearly
   * the normal fit on the same grid ([-8, 8], 4096 cells).  Boundaries are
   * compared at 1 and 2 bits only: at 4 and 8 bits near-ties and mirror
   * pairs of optima let them move with no change of cost. */
  enum { BINS = 4096 };
  static double counts[BINS];
  for (int j = 0; j < BINS; ++j)
    counts[j] = normal_cdf(-8.0 + 16.0 * (j + 1) / BINS) - normal_cdf(-8.0 + 16.0 * j / BINS);
  unswag_fit_options o = {0};
  o.hist_counts = counts;
  o.hist_bins = BINS;
  o.hist_lo = -8.0;
  o.hist_hi = 8.0;
  o.grid_cells = BINS;
  unswag_fit_options on = {0};
  on.range = 8.0;
  on.grid_cells = BINS;
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 4; ++b) {
      int bits = all_bits[b], m = 1 << bits;
      unswag_activation act = smooth[a];
      unswag_codebook ref, cb;
      if (bits == 8 && act != UNSWAG_SILU) continue; /* the slow ones: once is enough */
      CHECK(unswag_codebook_fit(act_deriv, &act, bits, &on, &ref) == UNSWAG_OK, "normal fit");
      CHECK(unswag_codebook_fit(act_deriv, &act, bits, &o, &cb) == UNSWAG_OK, "hist fit");
      double db = 0, dl = 0;
      for (int j = 0; j < m - 1; ++j) db = fmax(db, fabs(cb.boundaries[j] - ref.boundaries[j]));
      for (int j = 0; j < m; ++j) dl = fmax(dl, fabs(cb.levels[j] - ref.levels[j]));
      CHECK(fabs(cb.rms_error / ref.rms_error - 1) < 1e-4 && (bits > 2 || (db == 0 && dl < 1e-5)),
            "%s/%d histogram of the normal: rms %g vs %g, max boundary diff %g, level diff %g",
            unswag_activation_name(act), bits, cb.rms_error, ref.rms_error, db, dl);
    }

  /* a histogram of random normal samples: close to the built-in book */
  enum { SAMPLES = 200000, MC_BINS = 256 };
  static double mc[MC_BINS];
  for (int t = 0; t < SAMPLES; ++t) { /* Box-Muller */
    double u = 1.0 - rng_unit(), v = rng_unit();
    double x = sqrt(-2 * log(u)) * cos(2 * PI * v);
    int j = (int)floor((x + 6.0) / 12.0 * MC_BINS);
    if (j >= 0 && j < MC_BINS) mc[j] += 1;
  }
  o = (unswag_fit_options){0};
  o.hist_counts = mc;
  o.hist_bins = MC_BINS;
  o.hist_lo = -6.0;
  o.hist_hi = 6.0;
  for (int b = 0; b < 3; ++b) {
    unswag_activation act = UNSWAG_SILU;
    int m = 1 << all_bits[b];
    unswag_codebook ref, cb;
    unswag_codebook_builtin(act, all_bits[b], &ref);
    CHECK(unswag_codebook_fit(act_deriv, &act, all_bits[b], &o, &cb) == UNSWAG_OK, "mc fit");
    double db = 0, dl = 0;
    for (int j = 0; j < m - 1; ++j) db = fmax(db, fabs(cb.boundaries[j] - ref.boundaries[j]));
    for (int j = 0; j < m; ++j) dl = fmax(dl, fabs(cb.levels[j] - ref.levels[j]));
    CHECK(fabs(cb.rms_error / ref.rms_error - 1) < 0.02 && db < 0.05 && dl < 0.01,
          "silu/%d from %d samples: rms %g vs %g, max boundary diff %g, level diff %g", all_bits[b],
          SAMPLES, cb.rms_error, ref.rms_error, db, dl);
  }

  /* empty bins: fewer cells with weight than pieces, a gap, one bin */
  unswag_activation act = UNSWAG_GELU;
  double sparse[64] = {0};
  sparse[10] = 3;
  sparse[11] = 1;
  sparse[50] = 2;
  double gap[64];
  for (int j = 0; j < 64; ++j) gap[j] = j < 16 || j >= 48 ? 1.0 + j % 3 : 0.0;
  double one[1] = {5};
  struct {
    const char *name;
    const double *c;
    size_t bins;
    size_t cells;
  } cases[] = {{"sparse", sparse, 64, 0},
               {"gap", gap, 64, 1024},
               {"one bin", one, 1, 256},
               {"sparse, coarse grid", sparse, 64, 256}};
  for (size_t t = 0; t < sizeof cases / sizeof cases[0]; ++t)
    for (int b = 0; b < 4; ++b) {
      unswag_fit_options oh = {0};
      oh.hist_counts = cases[t].c;
      oh.hist_bins = cases[t].bins;
      oh.hist_lo = -4;
      oh.hist_hi = 4;
      oh.grid_cells = cases[t].cells;
      unswag_codebook cb;
      unswag_status st = unswag_codebook_fit(act_deriv, &act, all_bits[b], &oh, &cb);
      CHECK(st == UNSWAG_OK && unswag_codebook_validate(&cb) == UNSWAG_OK &&
                isfinite(cb.rms_error) && cb.rms_error >= 0,
            "histogram '%s' bits %d: status %d", cases[t].name, all_bits[b], (int)st);
      /* a piece over empty bins only has no weight: its level is f' at its middle */
      int m = 1 << all_bits[b], empty_ok = 1;
      double bw = 8.0 / (double)cases[t].bins;
      for (int k = 0; k < m && st == UNSWAG_OK; ++k) {
        double a = k ? cb.boundaries[k - 1] : -4.0, e = k < m - 1 ? cb.boundaries[k] : 4.0;
        int weight = 0;
        for (size_t j = 0; j < cases[t].bins; ++j)
          weight |= cases[t].c[j] > 0 && -4 + bw * (double)j < e && -4 + bw * (double)(j + 1) > a;
        if (!weight) empty_ok &= cb.levels[k] == (float)unswag_derivative(act, 0.5 * (a + e));
      }
      CHECK(empty_ok, "histogram '%s' bits %d: empty piece level is not f' at its middle",
            cases[t].name, all_bits[b]);
    }
}

/* ---- bad input: right status, output untouched --------------------------------------- */

static int untouched(const unswag_codebook *cb) {
  const unsigned char *p = (const unsigned char *)cb;
  for (size_t i = 0; i < sizeof *cb; ++i)
    if (p[i] != 0xA5) return 0;
  return 1;
}

static void expect_fit(const char *what, unswag_status want, unswag_derivative_fn f, void *user,
                       int bits, const unswag_fit_options *o) {
  unswag_codebook cb;
  memset(&cb, 0xA5, sizeof cb);
  unswag_status st = unswag_codebook_fit(f, user, bits, o, &cb);
  CHECK(st == want && untouched(&cb), "fit %s: status %d (want %d), output %s", what, (int)st,
        (int)want, untouched(&cb) ? "untouched" : "WRITTEN");
}

static double nan_deriv(double x, void *user) {
  (void)x;
  (void)user;
  return NAN;
}
static double nan_above_3(double x, void *user) {
  (void)user;
  return x > 3 ? NAN : x;
}
static double inf_at_0(double x, void *user) {
  (void)user;
  return x == 0 ? INFINITY : 1.0;
}
static double huge_deriv(double x, void *user) {
  (void)user;
  return x > 0 ? 1e200 : 0.0;
}

static void test_bad_input(void) {
  unswag_activation silu = UNSWAG_SILU;
  const unswag_status NULLP = UNSWAG_ERR_NULL_POINTER, BITS = UNSWAG_ERR_BAD_BITS,
                      PARAM = UNSWAG_ERR_BAD_PARAM, ACT = UNSWAG_ERR_BAD_ACTIVATION;

  /* builtin */
  CHECK(unswag_codebook_builtin(UNSWAG_SILU, 4, NULL) == NULLP, "builtin NULL out");
  const int acts[] = {UNSWAG_RELU, UNSWAG_LEAKY_RELU, UNSWAG_RELU6, UNSWAG_HARDTANH, 7, 99, -1};
  for (size_t i = 0; i < sizeof acts / sizeof acts[0]; ++i) {
    unswag_codebook cb;
    memset(&cb, 0xA5, sizeof cb);
    unswag_status st = unswag_codebook_builtin((unswag_activation)acts[i], 1, &cb);
    CHECK(st == ACT && untouched(&cb), "builtin act %d: status %d", acts[i], (int)st);
    if (i < 4)
      CHECK(strstr(unswag_last_error(), "no codebook") != NULL,
            "builtin act %d: message should say exact activations need no codebook", acts[i]);
  }
  const int bad_bits[] = {0, 3, 5, 16, -1, 9};
  for (size_t i = 0; i < sizeof bad_bits / sizeof bad_bits[0]; ++i) {
    unswag_codebook cb;
    memset(&cb, 0xA5, sizeof cb);
    unswag_status st = unswag_codebook_builtin(UNSWAG_GELU, bad_bits[i], &cb);
    CHECK(st == BITS && untouched(&cb), "builtin bits %d: status %d", bad_bits[i], (int)st);
    expect_fit("bad bits", BITS, act_deriv, &silu, bad_bits[i], NULL);
  }

  /* fit: pointers, sigma, grid, range */
  CHECK(unswag_codebook_fit(act_deriv, &silu, 2, NULL, NULL) == NULLP, "fit NULL out");
  expect_fit("NULL deriv", NULLP, NULL, NULL, 2, NULL);
  unswag_fit_options o = {0};
  const double bad_sigma[] = {-1.0, NAN, INFINITY, -INFINITY};
  for (int i = 0; i < 4; ++i) {
    o = (unswag_fit_options){0};
    o.sigma = bad_sigma[i];
    expect_fit("bad sigma", PARAM, act_deriv, &silu, 2, &o);
  }
  o = (unswag_fit_options){0};
  o.sigma = 1e-300; /* valid, but the grid's edges all round to float 0 */
  expect_fit("tiny sigma", PARAM, act_deriv, &silu, 2, &o);
  struct {
    int bits;
    size_t cells;
    unswag_status want;
  } grids[] = {{1, 1, PARAM},
               {1, 2, UNSWAG_OK},
               {4, 15, PARAM},
               {4, 16, UNSWAG_OK},
               {8, 255, PARAM},
               /* the caps that bound the DP's time (unswag.h) */
               {2, ((size_t)1 << 16) + 1, PARAM},
               {4, ((size_t)1 << 15) + 1, PARAM},
               {8, ((size_t)1 << 13) + 1, PARAM},
               {8, (size_t)1 << 16, PARAM},
               {8, (size_t)1 << 13, UNSWAG_OK},
               {1, ((size_t)1 << 22) + 1, PARAM},
               {1, SIZE_MAX, PARAM}};
  for (size_t i = 0; i < sizeof grids / sizeof grids[0]; ++i) {
    o = (unswag_fit_options){0};
    o.grid_cells = grids[i].cells;
    if (grids[i].want == UNSWAG_OK) {
      unswag_codebook cb;
      CHECK(unswag_codebook_fit(act_deriv, &silu, grids[i].bits, &o, &cb) == UNSWAG_OK &&
                unswag_codebook_validate(&cb) == UNSWAG_OK,
            "grid of %zu cells at %d bits should fit", grids[i].cells, grids[i].bits);
    } else {
      expect_fit("bad grid_cells", PARAM, act_deriv, &silu, grids[i].bits, &o);
    }
  }
  const double bad_range[] = {-1.0, NAN, INFINITY, 1e300 /* edges overflow float */,
                              1e-300 /* edges collapse in float */};
  for (int i = 0; i < 5; ++i) {
    o = (unswag_fit_options){0};
    o.range = bad_range[i];
    expect_fit("bad range", PARAM, act_deriv, &silu, 2, &o);
  }

  /* fit: histograms */
  double good[4] = {1, 2, 3, 4};
  struct {
    const char *name;
    double c0;
    size_t bins;
    double lo, hi, range;
  } hists[] = {{"0 bins", 1, 0, -1, 1, 0},
               {"lo == hi", 1, 4, 1, 1, 0},
               {"lo > hi", 1, 4, 2, 1, 0},
               {"NaN lo", 1, 4, NAN, 1, 0},
               {"inf hi", 1, 4, -1, INFINITY, 0},
               {"hi - lo overflows", 1, 4, -DBL_MAX, DBL_MAX, 0},
               {"negative count", -1, 4, -1, 1, 0},
               {"NaN count", NAN, 4, -1, 1, 0},
               {"inf count", INFINITY, 4, -1, 1, 0},
               {"count sum overflows", DBL_MAX, 4, -1, 1, 0},
               {"no mass inside the grid", 1, 4, 10, 20, 4}};
  for (size_t i = 0; i < sizeof hists / sizeof hists[0]; ++i) {
    double c[4] = {hists[i].c0, good[1], good[2], hists[i].c0 == DBL_MAX ? DBL_MAX : good[3]};
    o = (unswag_fit_options){0};
    o.hist_counts = c;
    o.hist_bins = hists[i].bins;
    o.hist_lo = hists[i].lo;
    o.hist_hi = hists[i].hi;
    o.range = hists[i].range;
    expect_fit(hists[i].name, PARAM, act_deriv, &silu, 2, &o);
  }
  double zeros[4] = {0, 0, 0, 0};
  o = (unswag_fit_options){0};
  o.hist_counts = zeros;
  o.hist_bins = 4;
  o.hist_lo = -1;
  o.hist_hi = 1;
  expect_fit("all-zero histogram", PARAM, act_deriv, &silu, 2, &o);

  /* fit: a callback that returns NaN / Inf / overflowing values */
  expect_fit("deriv NaN", PARAM, nan_deriv, NULL, 2, NULL);
  CHECK(strstr(unswag_last_error(), "deriv(") != NULL, "a NaN from deriv: message names x");
  expect_fit("deriv NaN above 3", PARAM, nan_above_3, NULL, 4, NULL);
  expect_fit("deriv inf at 0", PARAM, inf_at_0, NULL, 1, NULL);
  expect_fit("deriv^2 overflows", PARAM, huge_deriv, NULL, 2, NULL);
}

/* ---- validate -------------------------------------------------------------------------- */

static void test_validate(void) {
  unswag_codebook good;
  unswag_codebook_builtin(UNSWAG_SILU, 4, &good);
  CHECK(unswag_codebook_validate(&good) == UNSWAG_OK, "builtin silu/4 invalid");
  CHECK(unswag_codebook_validate(NULL) == UNSWAG_ERR_NULL_POINTER, "validate NULL");
  const int bad_bits[] = {0, 3, 16, -1, (int)0xA5A5A5A5};
  for (int i = 0; i < 5; ++i) {
    unswag_codebook cb = good;
    cb.bits = bad_bits[i];
    CHECK(unswag_codebook_validate(&cb) == UNSWAG_ERR_BAD_BITS, "validate bits %d", bad_bits[i]);
  }
  struct {
    const char *name;
    int is_level, index;
    float value;
  } bad[] = {{"unsorted", 0, 3, 5.0f},           {"equal boundaries", 0, 3, 0},
             {"NaN boundary", 0, 0, NAN},        {"inf boundary", 0, 14, INFINITY},
             {"-inf boundary", 0, 0, -INFINITY}, {"NaN level", 1, 7, NAN},
             {"inf level", 1, 15, INFINITY}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    unswag_codebook cb = good;
    if (bad[i].is_level) {
      cb.levels[bad[i].index] = bad[i].value;
    } else {
      cb.boundaries[bad[i].index] = bad[i].value;
      if (!strcmp(bad[i].name, "equal boundaries")) cb.boundaries[3] = cb.boundaries[4];
    }
    CHECK(unswag_codebook_validate(&cb) == UNSWAG_ERR_BAD_CODEBOOK, "validate: %s", bad[i].name);
  }
  /* entries beyond 2^bits are not part of the book */
  unswag_codebook cb = good;
  cb.bits = 1;
  cb.boundaries[0] = 0;
  cb.levels[2] = NAN;
  CHECK(unswag_codebook_validate(&cb) == UNSWAG_OK, "validate reads beyond 2^bits entries");
}

int main(void) {
  rng_seed(0x9E3779B97F4A7C15ull);
  test_derivative();
  test_builtin_tables();
  test_fit_vs_brute_force();
  test_fit_silu_brute_force();
  test_histogram_straddling();
  test_sigma_and_tails();
  test_histograms();
  test_bad_input();
  test_validate();
  if (n_fail) {
    printf("test_codebook: %d of %d checks FAILED\n", n_fail, n_pass + n_fail);
    return 1;
  }
  printf("test_codebook: %d checks passed\n", n_pass);
  return 0;
}

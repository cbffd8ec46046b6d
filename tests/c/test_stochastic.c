/*
 * Stochastic codes (unswag.h, UNSWAG_CODES_STOCHASTIC) against the double
 * reference of reference.c:
 *  - argument checks (nothing written on error), the level grid and its ends
 *    (the extrema of f');
 *  - all 65,536 inputs of fp16 and bf16 (a sample of fp32), every smooth
 *    activation, every width, several seeds: codes equal the reference's
 *    wherever the draw is not within rounding distance of flipping the code,
 *    and y equals the deterministic forward's y;
 *  - unbiased: the mean of level[code] over many draws is within 5 standard
 *    errors of f'(x) on a grid of x;
 *  - different seeds differ; 1 thread, all threads and the scalar path agree;
 *  - backward scales by the grid's levels.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "reference.h"
#include "unswag.h"

static const unswag_activation acts[3] = {UNSWAG_SILU, UNSWAG_GELU, UNSWAG_GELU_TANH};
static const int widths[4] = {1, 2, 4, 8};
static const uint64_t seeds[3] = {0, 1, 0xDEADBEEF12345678ull};
/* |u - p| under which a float kernel may round to the other code: d carries a
 * relative error ~1e-7 and p divides it by a level step of >= 1.23 / 255 */
static const double kMargin = 1e-4;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

static unswag_op stoch_op(unswag_activation act, int bits, uint64_t seed) {
  unswag_op op = unswag_op_make(act, bits);
  op.code_kind = UNSWAG_CODES_STOCHASTIC;
  op.seed = seed;
  return op;
}

/* min f' on a grid of step 1e-5 over [-4, 4]: the reference for the library's constants */
static double grid_min_derivative(unswag_activation act) {
  double m = 1.0;
  for (long k = -400000; k <= 400000; ++k) {
    double d = unswag_derivative(act, k * 1e-5);
    if (d < m) m = d;
  }
  return m;
}

static void test_arguments(void) {
  float y[16], lv[UNSWAG_MAX_LEVELS];
  float x[16] = {0};
  uint8_t codes[16];
  unswag_op op = stoch_op(UNSWAG_RELU, 1, 1);
  CHECK(unswag_op_validate(&op) == UNSWAG_ERR_BAD_ACTIVATION, "stochastic relu");
  CHECK(strstr(unswag_last_error(), "stochastic") != NULL, "message: %s", unswag_last_error());
  memset(y, 0xAB, sizeof y);
  memset(codes, 0xAB, sizeof codes);
  CHECK(unswag_forward(&op, UNSWAG_F32, x, y, codes, 16) == UNSWAG_ERR_BAD_ACTIVATION, "fwd");
  int untouched = 1;
  for (int i = 0; i < 16; ++i)
    untouched &= codes[i] == 0xAB && ref_bits(UNSWAG_F32, y, i) == 0xABABABABu;
  CHECK(untouched, "an invalid stochastic op wrote output");
  op = stoch_op(UNSWAG_SILU, 3, 1);
  CHECK(unswag_op_validate(&op) == UNSWAG_ERR_BAD_BITS, "bits 3");
  op = stoch_op(UNSWAG_SILU, 2, 1);
  op.code_kind = (unswag_code_kind)7;
  CHECK(unswag_op_validate(&op) == UNSWAG_ERR_BAD_PARAM, "code_kind 7");
  unswag_codebook cb;
  unswag_codebook_builtin(UNSWAG_SILU, 2, &cb);
  op = stoch_op(UNSWAG_SILU, 2, 1);
  op.codebook = &cb;
  CHECK(unswag_op_validate(&op) == UNSWAG_ERR_BAD_CODEBOOK, "stochastic with a codebook");
  op = stoch_op(UNSWAG_GELU_TANH, 8, 1);
  CHECK(unswag_op_validate(&op) == UNSWAG_OK, "gelu_tanh 8 bits");
  CHECK(unswag_stochastic_levels(UNSWAG_HARDTANH, 2, lv) == UNSWAG_ERR_BAD_ACTIVATION, "levels");
  CHECK(unswag_stochastic_levels(UNSWAG_SILU, 0, lv) == UNSWAG_ERR_BAD_BITS, "levels bits");
  CHECK(unswag_stochastic_levels(UNSWAG_SILU, 2, NULL) == UNSWAG_ERR_NULL_POINTER, "levels NULL");
}

static void test_levels(double lo[3]) {
  for (int a = 0; a < 3; ++a) {
    lo[a] = grid_min_derivative(acts[a]);
    for (int w = 0; w < 4; ++w) {
      float got[UNSWAG_MAX_LEVELS], want[UNSWAG_MAX_LEVELS];
      CHECK(unswag_stochastic_levels(acts[a], widths[w], got) == UNSWAG_OK, "levels");
      ref_stochastic_levels(lo[a], widths[w], want);
      const int k = 1 << widths[w];
      /* the grid search finds min f' to ~1e-10 (quadratic there), under a float ulp */
      int same = 1;
      for (int j = 0; j < k; ++j) same &= fabsf(got[j] - want[j]) <= 1e-7f;
      CHECK(same, "act %d bits %d: levels differ from the grid's extrema", acts[a], widths[w]);
      CHECK(got[0] < 0.0f && fabsf(got[0] + got[k - 1] - 1.0f) < 1e-6f, "ends symmetric");
    }
  }
}

/* codes of n elements of x (dtype dt, element i has global index i) vs the reference */
static void compare_codes(const char *what, const unswag_op *op, unswag_dtype dt, const void *x,
                          const uint8_t *codes, size_t n, long *near) {
  float lv[UNSWAG_MAX_LEVELS];
  unswag_stochastic_levels(op->act, op->bits, lv);
  long bad = 0;
  for (size_t i = 0; i < n; ++i) {
    double margin;
    uint32_t want =
        ref_stochastic_code(op->act, op->bits, op->seed, i, (float)ref_load(dt, x, i), lv, &margin);
    uint32_t got = ref_unpack(codes, i, op->bits);
    if (got == want) continue;
    if (margin < kMargin) ++*near;
    else if (++bad <= 3)
      fprintf(stderr, "%s act %d bits %d seed %llx: element %zu code %u, reference %u\n", what,
              op->act, op->bits, (unsigned long long)op->seed, i, got, want);
  }
  CHECK(bad == 0, "%s act %d dtype %d bits %d: %ld codes differ from the reference", what, op->act,
        dt, op->bits, bad);
}

static void test_against_reference(void) {
  const size_t n16 = 65536, n32 = 200000;
  uint16_t *x16 = malloc(n16 * 2), *y16 = malloc(n16 * 2), *yd16 = malloc(n16 * 2);
  uint32_t *x32 = malloc(n32 * 4), *y32 = malloc(n32 * 4), *yd32 = malloc(n32 * 4);
  uint8_t *codes = malloc(n32), *dcodes = malloc(n32);
  for (size_t i = 0; i < n16; ++i) x16[i] = (uint16_t)i;
  for (size_t i = 0; i < n32; ++i) x32[i] = i < 64 ? (uint32_t)(i * 0x04000000u) : rng();
  x32[64] = 0x7F800000u; /* +Inf, -Inf, NaN */
  x32[65] = 0xFF800000u;
  x32[66] = 0x7FC00001u;
  long near = 0, compared = 0;
  for (int a = 0; a < 3; ++a)
    for (int w = 0; w < 4; ++w)
      for (int s = 0; s < 3; ++s) {
        unswag_op op = stoch_op(acts[a], widths[w], seeds[s]);
        unswag_op det = unswag_op_make(acts[a], widths[w]);
        for (int dt = UNSWAG_F16; dt <= UNSWAG_BF16; ++dt) {
          CHECK(unswag_forward(&op, (unswag_dtype)dt, x16, y16, codes, n16) == UNSWAG_OK, "fwd");
          compare_codes("16-bit", &op, (unswag_dtype)dt, x16, codes, n16, &near);
          unswag_forward(&det, (unswag_dtype)dt, x16, yd16, dcodes, n16);
          CHECK(memcmp(y16, yd16, n16 * 2) == 0, "act %d dtype %d: y differs", acts[a], dt);
          compared += (long)n16;
        }
        CHECK(unswag_forward(&op, UNSWAG_F32, x32, y32, codes, n32) == UNSWAG_OK, "fwd f32");
        compare_codes("fp32", &op, UNSWAG_F32, x32, codes, n32, &near);
        unswag_forward(&det, UNSWAG_F32, x32, yd32, dcodes, n32);
        CHECK(memcmp(y32, yd32, n32 * 4) == 0, "act %d fp32: y differs", acts[a]);
        compared += (long)n32;
      }
  /* rounding-distance disagreements must be as rare as their margin says */
  CHECK(near <= compared / 1000, "%ld of %ld codes differ within the rounding margin", near,
        compared);
  printf("test_stochastic: %ld codes compared, %ld differ within |u - p| < %g\n", compared, near,
         kMargin);
  free(x16), free(y16), free(yd16), free(x32), free(y32), free(yd32), free(codes), free(dcodes);
}

/* mean of level[code] over 16 seeds x 8192 elements of the same x */
static void test_unbiased(void) {
  const size_t n = 8192;
  float *x = malloc(n * 4), *y = malloc(n * 4);
  uint8_t *codes = malloc(n);
  for (int a = 0; a < 3; ++a)
    for (int w = 0; w < 3; ++w) { /* 1, 2, 4 bits */
      const int bits = widths[w];
      float lv[UNSWAG_MAX_LEVELS];
      unswag_stochastic_levels(acts[a], bits, lv);
      for (int k = -24; k <= 24; ++k) {
        const float xv = (float)k / 4.0f;
        for (size_t i = 0; i < n; ++i) x[i] = xv;
        double sum = 0.0;
        for (uint64_t s = 0; s < 16; ++s) {
          unswag_op op = stoch_op(acts[a], bits, 1000 + s);
          unswag_forward(&op, UNSWAG_F32, x, y, codes, n);
          for (size_t i = 0; i < n; ++i) sum += lv[ref_unpack(codes, i, bits)];
        }
        const double count = 16.0 * (double)n, mean = sum / count;
        const double d = unswag_derivative(acts[a], xv);
        int j = 0;
        while (j + 1 < (1 << bits) - 1 && lv[j + 1] <= d) ++j;
        const double step = (double)lv[j + 1] - lv[j], p = (d - lv[j]) / step;
        const double se = step * sqrt(p * (1.0 - p) / count);
        CHECK(fabs(mean - d) <= 5.0 * se + 1e-6, "act %d bits %d x %g: mean %.8f, f' %.8f, se %.2g",
              acts[a], bits, (double)xv, mean, d, se);
      }
    }
  free(x), free(y), free(codes);
}

static void test_seeds_and_threads(void) {
  const size_t n = ((size_t)1 << 20) + 5;
  uint16_t *x = malloc(n * 2), *y[3];
  uint8_t *c[3];
  size_t nb;
  unswag_code_bytes(n, 2, &nb);
  for (int k = 0; k < 3; ++k) y[k] = malloc(n * 2), c[k] = malloc(nb);
  for (size_t i = 0; i < n; ++i) x[i] = unswag_f32_to_bf16((float)(rng() % 8000) / 1000.0f - 4.0f);
  unswag_op op = stoch_op(UNSWAG_GELU, 2, 42);
  const unswag_cpu_options one = {UNSWAG_PATH_THREADED, 1}, all = {UNSWAG_PATH_THREADED, 0},
                           scalar = {UNSWAG_PATH_SCALAR, 0};
  unswag_forward_advanced(&op, UNSWAG_BF16, x, y[0], c[0], n, &one);
  unswag_forward_advanced(&op, UNSWAG_BF16, x, y[1], c[1], n, &all);
  unswag_forward_advanced(&op, UNSWAG_BF16, x, y[2], c[2], n, &scalar);
  CHECK(memcmp(c[0], c[1], nb) == 0 && memcmp(y[0], y[1], n * 2) == 0, "1 vs all threads");
  CHECK(memcmp(c[0], c[2], nb) == 0 && memcmp(y[0], y[2], n * 2) == 0, "threads vs scalar");
  long near = 0;
  compare_codes("threaded", &op, UNSWAG_BF16, x, c[1], n, &near);
  CHECK(near <= (long)(n / 1000), "threaded: %ld near", near);
  /* in place (x == y): the same codes and y */
  memcpy(y[2], x, n * 2);
  unswag_forward_advanced(&op, UNSWAG_BF16, y[2], y[2], c[2], n, &all);
  CHECK(memcmp(c[0], c[2], nb) == 0 && memcmp(y[0], y[2], n * 2) == 0, "in place");
  /* another seed: most codes of elements between two levels change */
  op.seed = 43;
  unswag_forward(&op, UNSWAG_BF16, x, y[2], c[2], n);
  size_t diff = 0;
  for (size_t i = 0; i < n; ++i) diff += ref_unpack(c[0], i, 2) != ref_unpack(c[2], i, 2);
  CHECK(diff > n / 5, "seeds 42 and 43: only %zu of %zu codes differ", diff, n);
  /* backward: dx = dy * level[code] with the grid's levels (dy = 1 gives the level) */
  float lv[UNSWAG_MAX_LEVELS];
  unswag_stochastic_levels(UNSWAG_GELU, 2, lv);
  for (size_t i = 0; i < n; ++i) x[i] = 0x3F80; /* bf16 1.0 */
  CHECK(unswag_backward(&op, UNSWAG_BF16, x, c[2], y[2], n) == UNSWAG_OK, "backward");
  int levels_ok = 1;
  for (size_t i = 0; i < n; ++i)
    levels_ok &= y[2][i] == unswag_f32_to_bf16(lv[ref_unpack(c[2], i, 2)]);
  CHECK(levels_ok, "backward does not scale by the stochastic levels");
  free(x);
  for (int k = 0; k < 3; ++k) free(y[k]), free(c[k]);
}

int main(void) {
  double lo[3];
  test_arguments();
  test_levels(lo);
  test_against_reference();
  test_unbiased();
  test_seeds_and_threads();
  CHECK_SUMMARY("test_stochastic");
}

/*
 * f32_exhaustive - the fp32 float-float activations (src/core/act_math_f32.h:
 * silu, gelu_tanh, gelu)
 * on all 2^32 inputs against a long double reference: the worst distance in
 * ulps from the correctly rounded value (the contract: <= 1), and how many
 * results are not correctly rounded.  Not part of CI (minutes on 2 cores):
 *
 *   bash tools/f32_exhaustive.sh      # builds with gcc -fopenmp, then runs
 *   F32_EXHAUSTIVE_ONLY=gelu bash tools/f32_exhaustive.sh   # one of them
 *
 * The reference rounds a long double (64-bit significand) value once to float,
 * so it is itself correctly rounded except within 2^-40 ulp of a midpoint.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "act_math_f32.h"

static float ref_silu(float x) { return (float)((long double)x / (1.0L + expl(-(long double)x))); }

static float ref_gelu(float x) {
  long double xl = x;
  return (float)(0.5L * xl * erfcl(-xl / sqrtl(2.0L)));
}

static float ref_gelu_tanh(float x) {
  long double xl = x;
  long double v = (long double)1.5957691216057307117 * (xl + (long double)0.044715 * xl * xl * xl);
  return (float)(xl / (1.0L + expl(-v)));
}

/* distance in ulps between two floats (NaN only matches NaN; +0 == -0) */
static int64_t ulps(float a, float b) {
  if (a != a || b != b) return (a != a && b != b) ? 0 : INT64_MAX;
  int32_t ia, ib;
  memcpy(&ia, &a, 4);
  memcpy(&ib, &b, 4);
  int64_t la = ia < 0 ? -(int64_t)(ia & 0x7FFFFFFF) : ia;
  int64_t lb = ib < 0 ? -(int64_t)(ib & 0x7FFFFFFF) : ib;
  return la > lb ? la - lb : lb - la;
}

static unsigned step = 1; /* argv[1]: every step-th input of each block (a quick look) */

static int check(const char *name, float (*mine)(float), float (*ref)(float)) {
  int64_t worst = 0, off_by_one = 0, bad = 0;
  uint32_t worst_at = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : off_by_one, bad)
  for (int64_t hi = 0; hi < 65536; ++hi) {
    int64_t w = 0;
    uint32_t w_at = 0;
    for (uint32_t lo = 0; lo < 65536; lo += step) {
      uint32_t u = (uint32_t)hi << 16 | lo;
      float x;
      memcpy(&x, &u, 4);
      int64_t d = ulps(mine(x), ref(x));
      off_by_one += d == 1;
      bad += d > 1;
      if (d > w) w = d, w_at = u;
    }
#pragma omp critical
    if (w > worst) worst = w, worst_at = w_at;
  }
  float x;
  memcpy(&x, &worst_at, 4);
  printf(
      "%-10s %s: worst %lld ulp (at x = %.9g, 0x%08X: %.9g vs %.9g), "
      "%lld not correctly rounded (1 ulp), %lld beyond 1 ulp\n",
      name, step == 1 ? "all 2^32 inputs" : "a sample", (long long)worst, x, worst_at, mine(x),
      ref(x), (long long)off_by_one, (long long)bad);
  return bad == 0;
}

int main(int argc, char **argv) {
  if (argc > 1) step = (unsigned)atoi(argv[1]) > 0 ? (unsigned)atoi(argv[1]) : 1;
  const char *only = getenv("F32_EXHAUSTIVE_ONLY"); /* one activation by name */
  int ok = 1;
  if (!only || !strcmp(only, "silu")) ok &= check("silu", us_silu_ff, ref_silu);
  if (!only || !strcmp(only, "gelu_tanh")) ok &= check("gelu_tanh", us_gelu_tanh_ff, ref_gelu_tanh);
  if (!only || !strcmp(only, "gelu")) ok &= check("gelu", us_gelu_ff, ref_gelu);
  printf("%s\n", ok ? "PASS: every input within 1 ulp" : "FAIL");
  return ok ? 0 : 1;
}

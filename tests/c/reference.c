#include "reference.h"
#include <math.h>
#define UNSWAG_PI 3.14159265358979323846
#include <string.h>

static double f32_value(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* decode by hand (not via the library) so conversions are tested too */
static double f16_value(uint32_t h) {
  int s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31) v = m ? NAN : INFINITY;
  else if (e == 0) v = ldexp(m, -24);
  else v = ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

double ref_load(unswag_dtype dt, const void *buf, size_t i) {
  return dt == UNSWAG_F32   ? f32_value(ref_bits(dt, buf, i))
         : dt == UNSWAG_F16 ? f16_value(ref_bits(dt, buf, i))
                            : f32_value(ref_bits(dt, buf, i) << 16);
}

uint32_t ref_bits(unswag_dtype dt, const void *buf, size_t i) {
  if (dt == UNSWAG_F32) {
    uint32_t u;
    memcpy(&u, (const char *)buf + 4 * i, 4);
    return u;
  }
  uint16_t h;
  memcpy(&h, (const char *)buf + 2 * i, 2);
  return h;
}

/* Round v to a binary format with p significant bits, minimum normal
 * exponent emin and largest finite value maxv; returns the rounded value. */
static double round_format(double v, int p, int emin, double maxv) {
  if (isnan(v) || isinf(v) || v == 0) return v;
  int e = ilogb(v);
  if (e < emin) e = emin;
  double q = ldexp(1.0, e - (p - 1));
  double r = rint(v / q) * q; /* exact scaling; rint rounds to nearest even */
  if (fabs(r) > maxv) r = copysign(INFINITY, v);
  return r;
}

static uint32_t encode(unswag_dtype dt, double r) {
  /* r is exactly representable in dt: encode its bits directly */
  float f = (float)r;
  uint32_t u;
  memcpy(&u, &f, 4);
  if (isnan(r)) return dt == UNSWAG_F32 ? 0x7FC00000u : dt == UNSWAG_F16 ? 0x7E00u : 0x7FC0u;
  if (dt == UNSWAG_F32) return u;
  if (dt == UNSWAG_BF16) return u >> 16;
  uint32_t s = signbit(r) ? 0x8000u : 0;
  double a = fabs(r);
  if (isinf(r)) return s | 0x7C00u;
  if (a < ldexp(1.0, -14)) return s | (uint32_t)(a * ldexp(1.0, 24));
  int e = ilogb(a);
  uint32_t m = (uint32_t)(ldexp(a, 10 - e)) - 1024;
  return s | ((uint32_t)(e + 15) << 10) | m;
}

uint32_t ref_round_bits(unswag_dtype dt, double v) {
  double r;
  if (dt == UNSWAG_F32) r = round_format(v, 24, -126, 3.4028234663852886e38);
  else if (dt == UNSWAG_F16) r = round_format(v, 11, -14, 65504.0);
  else r = round_format(v, 8, -126, 3.3895313892515355e38);
  return encode(dt, r);
}

uint64_t ref_ulp_diff(unswag_dtype dt, uint32_t a, uint32_t b) {
  int width = dt == UNSWAG_F32 ? 32 : 16;
  uint32_t sign = 1u << (width - 1);
  uint32_t mag = sign - 1;
  uint32_t inf = dt == UNSWAG_F32 ? 0x7F800000u : dt == UNSWAG_F16 ? 0x7C00u : 0x7F80u;
  int an = (a & mag) > inf, bn = (b & mag) > inf;
  if (an || bn) return (an && bn) ? 0 : UINT64_MAX;
  /* sign-magnitude -> a monotone integer line (+0 and -0 both 0) */
  int64_t ia = (a & sign) ? -(int64_t)(a & mag) : (int64_t)(a & mag);
  int64_t ib = (b & sign) ? -(int64_t)(b & mag) : (int64_t)(b & mag);
  return (uint64_t)(ia > ib ? ia - ib : ib - ia);
}

double ref_activation(const unswag_op *op, double x) {
  switch (op->act) {
    case UNSWAG_RELU: return isnan(x) ? x : (x > 0 ? x : 0.0);
    case UNSWAG_LEAKY_RELU: return x > 0 ? x : x * (double)op->slope;
    case UNSWAG_RELU6: return isnan(x) ? x : (x <= 0 ? 0.0 : (x >= 6 ? 6.0 : x));
    case UNSWAG_HARDTANH: return isnan(x) ? x : (x <= op->lo ? op->lo : (x >= op->hi ? op->hi : x));
    case UNSWAG_SILU: return x / (1.0 + exp(-x));
    case UNSWAG_GELU: return 0.5 * x * erfc(-x / sqrt(2.0));
    default: {
      /* 0.5 x (1 + tanh u) written as x sigmoid(2u): no cancellation for x < 0 */
      double u = sqrt(2.0 / UNSWAG_PI) * (x + 0.044715 * x * x * x);
      return x / (1.0 + exp(-2.0 * u));
    }
  }
}

uint32_t ref_code(const unswag_op *op, const unswag_codebook *cb, float x) {
  switch (op->act) {
    case UNSWAG_RELU:
    case UNSWAG_LEAKY_RELU: return x > 0;
    case UNSWAG_RELU6: return x > 0 && x < 6;
    case UNSWAG_HARDTANH: return x > op->lo && x < op->hi;
    default: {
      uint32_t c = 0;
      for (int j = 0; j < (1 << cb->bits) - 1; ++j) c += x > cb->boundaries[j];
      return c;
    }
  }
}

uint32_t ref_backward_bits(const unswag_op *op, const unswag_codebook *cb, unswag_dtype dt,
                           uint32_t dy_bits, uint32_t c) {
  double dy = dt == UNSWAG_F32   ? f32_value(dy_bits)
              : dt == UNSWAG_F16 ? f16_value(dy_bits)
                                 : f32_value(dy_bits << 16);
  if (unswag_activation_is_exact(op->act)) {
    if (c) return dy_bits;
    if (op->act != UNSWAG_LEAKY_RELU) return 0;
    /* PyTorch: grad * negval in float, one rounding to the dtype */
    float p = (float)dy * op->slope;
    return ref_round_bits(dt, p);
  }
  float p = (float)dy * cb->levels[c];
  return ref_round_bits(dt, p);
}

uint32_t ref_unpack(const uint8_t *codes, size_t i, int bits) {
  size_t bit = i * (size_t)bits;
  return (codes[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
}

/* ---- stochastic codes ------------------------------------------------------- */

void ref_stochastic_levels(double lo, int bits, float *levels) {
  const double hi = 1.0 - lo;
  const int top = (1 << bits) - 1;
  for (int j = 0; j <= top; ++j) levels[j] = (float)(lo + (hi - lo) * j / top);
}

/* splitmix64: the state advances by the golden gamma, then is mixed */
static uint64_t ref_splitmix64(uint64_t seed, uint64_t steps) {
  uint64_t state = seed + steps * 0x9E3779B97F4A7C15ull;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint32_t ref_stochastic_code(unswag_activation act, int bits, uint64_t seed, uint64_t i, float x,
                             const float *levels, double *margin) {
  *margin = 1.0;
  if (isnan(x)) return 0;
  const int top = (1 << bits) - 1;
  double d = isinf(x) ? (x > 0 ? 1.0 : 0.0) : unswag_derivative(act, (double)x);
  if (d < levels[0]) d = levels[0];
  if (d > levels[top]) d = levels[top];
  int j = 0;
  while (j + 1 < top && levels[j + 1] <= d) ++j;
  const double p = (d - levels[j]) / ((double)levels[j + 1] - levels[j]);
  const double u = (double)(ref_splitmix64(seed, i + 1) >> 40) / 16777216.0;
  *margin = fabs(u - p);
  return (uint32_t)j + (u < p ? 1u : 0u);
}

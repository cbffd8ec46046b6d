/* The CPU forward of stochastic codes (unswag.h, UNSWAG_CODES_STOCHASTIC).
 * y comes from the scalar kernel (the same bytes as every variant); the codes
 * it writes are then replaced, chunk by chunk, by stochastic_math.h's codes.
 * x is copied to a local chunk first, so x == y aliasing is fine. */
#include <string.h>
#include "../core/stochastic_math.h"
#include "cpu_kernels.h"
#include "stochastic.h"

static float element(const uint8_t *buf, size_t i, unswag_dtype dt) {
  if (dt == UNSWAG_F32) {
    uint32_t b;
    memcpy(&b, buf + 4 * i, 4);
    return us_bits_to_f32(b);
  }
  uint16_t h;
  memcpy(&h, buf + 2 * i, 2);
  return us_16_to_f32(h, dt == UNSWAG_BF16);
}

void unswag_cpu_stochastic_forward(const unswag_kargs *a, uint64_t seed, uint64_t first,
                                   const uint8_t *x, uint8_t *y, uint8_t *codes, size_t n) {
  const size_t es = unswag_dtype_size(a->dtype);
  const int bits = a->bits, per = 8 / bits;
  uint8_t in[CHUNK * 4];
  uint8_t c[CHUNK];
  for (size_t base = 0; base < n; base += CHUNK) {
    const size_t m = n - base < CHUNK ? n - base : CHUNK;
    uint8_t *out = codes + base / 8 * (size_t)bits;
    memcpy(in, x + base * es, m * es);
    unswag_cpu_kernels_scalar.forward(a, in, y + base * es, out, m);
    memset(c, 0, sizeof c);
    for (size_t i = 0; i < m; ++i)
      c[i] = (uint8_t)us_stoch_code(a->act, element(in, i, a->dtype), a->levels, bits, seed,
                                    first + base + i);
    const size_t nbytes = (m * (size_t)bits + 7) / 8;
    for (size_t j = 0; j < nbytes; ++j) {
      uint32_t byte = 0;
      for (int e = 0; e < per; ++e) byte |= (uint32_t)c[j * per + e] << (e * bits);
      out[j] = (uint8_t)byte;
    }
  }
}

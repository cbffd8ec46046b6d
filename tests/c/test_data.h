/* Reproducible test data shared by the C and CUDA tests: an xorshift64* stream
 * (each test seeds it with its own constant at the top of main, so its data
 * never depends on another test's), uniform and normal doubles from it, and
 * element stores into a buffer of any dtype. */
#ifndef UNSWAG_TEST_DATA_H
#define UNSWAG_TEST_DATA_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "unswag.h"

static uint64_t rng_state = 1;

static inline void rng_seed(uint64_t seed) { rng_state = seed; }

static inline uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

/* uniform in [0, 1) */
static inline double rng_unit(void) { return (rng() >> 11) * 0x1.0p-53; }

/* standard normal (Box-Muller; u1 in (0, 1]) */
static inline double rng_normal(void) {
  double u1 = ((rng() >> 11) + 1) * 0x1.0p-53, u2 = rng_unit();
  return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

/* element i of a buffer of dtype dt gets the bits b (16-bit dtypes: the low half) */
static inline void put_bits(unswag_dtype dt, void *buf, size_t i, uint32_t b) {
  if (dt == UNSWAG_F32) {
    memcpy((char *)buf + 4 * i, &b, 4);
  } else {
    uint16_t h = (uint16_t)b;
    memcpy((char *)buf + 2 * i, &h, 2);
  }
}

#endif

/* The plain reference the kernels are tested against: double arithmetic
 * through libm and a correctly rounding conversion to each dtype. */
#ifndef UNSWAG_TEST_REFERENCE_H
#define UNSWAG_TEST_REFERENCE_H
#include <stdint.h>
#include "unswag.h"

/* The value of element i of a dtype buffer, as double. */
double ref_load(unswag_dtype dt, const void *buf, size_t i);
/* v correctly rounded (nearest even) to dt, as the dtype's bit pattern. */
uint32_t ref_round_bits(unswag_dtype dt, double v);
/* Bits of element i. */
uint32_t ref_bits(unswag_dtype dt, const void *buf, size_t i);
/* Distance in ulps between two bit patterns of dt (0 if both NaN,
 * a large number if only one is NaN). */
uint64_t ref_ulp_diff(unswag_dtype dt, uint32_t a, uint32_t b);

/* f(x) in double (exact family: exact; smooth: libm). */
double ref_activation(const unswag_op *op, double x);
/* The code of x: exact-family predicate or count of boundaries below x. */
uint32_t ref_code(const unswag_op *op, const unswag_codebook *cb, float x);
/* Expected dx bits for dy with code c: exact family selects like the
 * framework, smooth rounds float(dy) * level[c] once. */
uint32_t ref_backward_bits(const unswag_op *op, const unswag_codebook *cb, unswag_dtype dt,
                           uint32_t dy_bits, uint32_t c);
/* The code of element i in a packed buffer. */
uint32_t ref_unpack(const uint8_t *codes, size_t i, int bits);

/* Stochastic codes (unswag.h, UNSWAG_CODES_STOCHASTIC), in double: the level
 * grid float(lo + j (hi - lo) / (2^bits - 1)) with lo = min f' (searched on a
 * fine grid by the caller's unswag_derivative, then given here), the draw
 * u = top 24 bits of splitmix64 at step i + 1 / 2^24, and the code j + (u < p)
 * with p from d = f'(x) in double.  *margin = |u - p| (how far the draw was
 * from flipping the code: a float kernel may differ only where it is tiny). */
uint32_t ref_stochastic_code(unswag_activation act, int bits, uint64_t seed, uint64_t i, float x,
                             const float *levels, double *margin);
/* The 2^bits levels, from lo = min f' and hi = 1 - lo. */
void ref_stochastic_levels(double lo, int bits, float *levels);
#endif

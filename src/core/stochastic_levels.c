/* The level grid of stochastic codes (unswag.h, UNSWAG_CODES_STOCHASTIC). */
#include "internal.h"

/* min f' of each smooth activation (mpmath, 40 digits, at the root of f'').
 * f(x) - f(-x) = x for all three, so f'(-x) = 1 - f'(x) and max f' = 1 - min f'. */
static double min_derivative(unswag_activation act) {
  switch (act) {
    case UNSWAG_SILU: return -0.099839320128866916958; /* x = -2.39935728051546767 */
    case UNSWAG_GELU: return -0.128904145185154786341; /* x = -sqrt 2 */
    default: return -0.128993068658771765456;          /* gelu_tanh, x = -1.41850400879082836 */
  }
}

unswag_status unswag_stochastic_levels(unswag_activation act, int bits, float *levels) {
  if (unswag_activation_is_exact(act) != 0)
    return unswag_fail(UNSWAG_ERR_BAD_ACTIVATION,
                       "stochastic codes take silu, gelu or gelu_tanh; got activation %d",
                       (int)act);
  if (!unswag_bits_valid(bits))
    return unswag_fail(UNSWAG_ERR_BAD_BITS, "stochastic codes take bits in {1, 2, 4, 8}; got %d",
                       bits);
  if (!levels) return unswag_fail(UNSWAG_ERR_NULL_POINTER, "levels is NULL");
  const double lo = min_derivative(act), hi = 1.0 - lo;
  const int top = (1 << bits) - 1;
  for (int j = 0; j <= top; ++j) levels[j] = (float)(lo + (hi - lo) * j / top);
  return UNSWAG_OK;
}

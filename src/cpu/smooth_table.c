/* The 16-bit smooth forward by table: the value of silu / gelu / gelu_tanh
 * depends only on the input's 16 bits, so the vectorised CPU kernels look it
 * up instead of computing exp and a division per element (the forward was
 * compute-bound at ~1.8 ns an element).  Each table is filled on first use by
 * the same act_math.h code the direct path runs, so the bytes cannot differ;
 * the scalar kernels still compute directly, and the tests compare the two on
 * all 65,536 inputs.  128 KiB a table, six tables at most. */
#include <stdatomic.h>
#include "smooth_table.h"
#include "../core/act_math.h"

#define N_ACTS 3   /* silu, gelu, gelu_tanh */
#define N_DTYPES 2 /* fp16, bf16 */

/* one entry of padding: the AVX2 forward gathers 32 bits at entry x, reading x + 1 */
static uint16_t tables[N_ACTS][N_DTYPES][65536 + 2];
static atomic_int state[N_ACTS][N_DTYPES]; /* 0 empty, 1 being filled, 2 ready */

static void fill(uint16_t *t, unswag_activation act, unswag_dtype dtype) {
  const int bf = dtype == UNSWAG_BF16;
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = (uint16_t)i;
    const float x = bf ? us_bf16_to_f32(h) : us_f16_to_f32(h);
    float y;
    if (act == UNSWAG_SILU) y = us_silu_f32(x);
    else if (act == UNSWAG_GELU) y = us_gelu_f32(x);
    else y = us_gelu_tanh_f32(x);
    t[i] = bf ? us_f32_to_bf16(y) : us_f32_to_f16(y);
  }
}

const uint16_t *unswag_cpu_smooth_table(unswag_activation act, unswag_dtype dtype) {
  const int a = act == UNSWAG_SILU ? 0 : (act == UNSWAG_GELU ? 1 : 2);
  const int d = dtype == UNSWAG_BF16 ? 1 : 0;
  atomic_int *s = &state[a][d];
  if (atomic_load_explicit(s, memory_order_acquire) != 2) {
    int expected = 0;
    if (atomic_compare_exchange_strong_explicit(s, &expected, 1, memory_order_acq_rel,
                                                memory_order_acquire)) {
      fill(tables[a][d], act, dtype);
      atomic_store_explicit(s, 2, memory_order_release);
    } else {
      /* another thread is filling it (a fraction of a millisecond, once) */
      while (atomic_load_explicit(s, memory_order_acquire) != 2) {
      }
    }
  }
  return tables[a][d];
}

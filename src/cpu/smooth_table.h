/* Forward values of the smooth activations for every 16-bit input, by table. */
#ifndef UNSWAG_SMOOTH_TABLE_H
#define UNSWAG_SMOOTH_TABLE_H

#include <stdint.h>
#include "unswag.h"

/* y bits of act (silu, gelu, gelu_tanh) for each of the 65,536 fp16 or bf16
 * input bit patterns: table[x_bits] = f(x), followed by one zero entry (so a
 * 32-bit load at any entry stays inside).  Built on first use, thread-safe. */
const uint16_t *unswag_cpu_smooth_table(unswag_activation act, unswag_dtype dtype);

#endif

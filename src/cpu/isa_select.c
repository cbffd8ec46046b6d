/* Picks the CPU kernel variant for this processor: probed on the first call,
 * remembered after. */
#include <stdatomic.h>
#include "cpu_kernels.h"

#ifdef UNSWAG_HAVE_AVX2_KERNELS
#include <cpuid.h>
/* F16C by cpuid: some clang versions do not know "f16c" in __builtin_cpu_supports */
static int have_avx2_f16c(void) {
  unsigned a, b, c, d;
  return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

static const unswag_cpu_kernels *probe(void) {
#ifdef UNSWAG_HAVE_AVX2_KERNELS
  if (have_avx2_f16c()) return &unswag_cpu_kernels_avx2;
#endif
  return &unswag_cpu_kernels_baseline;
}

const unswag_cpu_kernels *unswag_cpu_kernels_best(void) {
  /* NULL until probed; two threads probing at once store the same answer */
  static const unswag_cpu_kernels *_Atomic best;
  const unswag_cpu_kernels *k = atomic_load_explicit(&best, memory_order_acquire);
  if (!k) {
    k = probe();
    atomic_store_explicit(&best, k, memory_order_release);
  }
  return k;
}

/* Picks the CPU kernel variant for this processor: probed on the first call,
 * remembered after.  UNSWAG_CPU_VARIANT=baseline|avx2 in the environment forces a
 * variant this processor runs, so the tests can check each one on a machine that
 * has several; any other value leaves the choice to the probe. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "cpu_kernels.h"

#ifdef UNSWAG_HAVE_AVX2_KERNELS
#include <cpuid.h>
/* AVX2, FMA and F16C (by cpuid: some clang versions do not know "f16c" in
 * __builtin_cpu_supports); every AVX2 processor has the other two */
static int have_avx2_fma_f16c(void) {
  unsigned a, b, c, d;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

static const unswag_cpu_kernels *forced(void) {
  const char *want = getenv("UNSWAG_CPU_VARIANT");
  if (!want) return NULL;
  if (strcmp(want, "baseline") == 0) return &unswag_cpu_kernels_baseline;
#ifdef UNSWAG_HAVE_AVX2_KERNELS
  if (strcmp(want, "avx2") == 0 && have_avx2_fma_f16c()) return &unswag_cpu_kernels_avx2;
#endif
  return NULL;
}

static const unswag_cpu_kernels *probe(void) {
  const unswag_cpu_kernels *k = forced();
  if (k) return k;
#ifdef UNSWAG_HAVE_AVX2_KERNELS
  if (have_avx2_fma_f16c()) return &unswag_cpu_kernels_avx2;
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

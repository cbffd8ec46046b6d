/* Which CPU kernel variant a test ran, and a check that UNSWAG_CPU_VARIANT forced the
 * one asked for (CMake runs the kernel tests once per variant on an AVX2 machine).
 * Include after check.h; the test needs src/cpu on its include path. */
#ifndef UNSWAG_TEST_CPU_VARIANT_H
#define UNSWAG_TEST_CPU_VARIANT_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cpu_kernels.h"

static void check_cpu_variant(const char *test) {
  const char *ran = unswag_cpu_kernels_best()->name;
  const char *want = getenv("UNSWAG_CPU_VARIANT");
  printf("%s: CPU kernel variant %s\n", test, ran);
  /* "baseline" runs everywhere; another name may be missing on this processor */
  if (want && strcmp(want, "baseline") == 0)
    CHECK(strcmp(ran, "baseline") == 0, "UNSWAG_CPU_VARIANT=baseline ran %s", ran);
}
#endif

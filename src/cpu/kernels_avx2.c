/* The avx2 variant of the CPU kernels: -O3 -mavx2 -mf16c (CMakeLists.txt),
 * 16-bit smooth forward values by table, and the intrinsics loops. */
#define UNSWAG_SMOOTH_TABLE 1
#include "smooth16_avx2.h"
#include "kernels.inc"
#include "gated_kernels.inc"

UNSWAG_CPU_VARIANT(unswag_cpu_kernels_avx2, "avx2");

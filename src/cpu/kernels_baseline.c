/* The baseline variant of the CPU kernels: -O3 for the compiler's default
 * ISA (CMakeLists.txt), 16-bit smooth forward values by table. */
#define UNSWAG_SMOOTH_TABLE 1
#include "kernels.inc"
#include "gated_kernels.inc"

UNSWAG_CPU_VARIANT(unswag_cpu_kernels_baseline, "baseline");

/* The sse2 variant of the CPU kernels (flags set in CMakeLists.txt). */
#define KERNEL_NAME(name) unswag_cpu_##name##_sse2
#define UNSWAG_SMOOTH_TABLE 1 /* 16-bit smooth forward values by table */
#include "kernels.inc"

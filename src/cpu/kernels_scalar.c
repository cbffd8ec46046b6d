/* The scalar variant of the CPU kernels (flags set in CMakeLists.txt). */
#define KERNEL_NAME(name) unswag_cpu_##name##_scalar
#include "kernels.inc"

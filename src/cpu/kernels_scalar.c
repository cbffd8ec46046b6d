/* The scalar variant of the CPU activation kernels: vectorisation off
 * (CMakeLists.txt), every value computed; the reference the others must match.
 * The gated kernels have no scalar variant. */
#include "kernels.inc"

const unswag_cpu_kernels unswag_cpu_kernels_scalar = {"scalar", kernel_forward, kernel_backward,
                                                      NULL, NULL};

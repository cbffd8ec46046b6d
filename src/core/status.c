/* Status names, the per-thread error detail and the version. */
#include <stdarg.h>
#include <stdio.h>
#include "internal.h"

static const char *const status_names[UNSWAG_STATUS_COUNT_] = {
    "UNSWAG_OK: success",
    "UNSWAG_ERR_NULL_POINTER: a required pointer is NULL",
    "UNSWAG_ERR_SIZE_OVERFLOW: the element or code byte count overflows size_t",
    "UNSWAG_ERR_BAD_DTYPE: unknown dtype (expected UNSWAG_F32, UNSWAG_F16 or UNSWAG_BF16)",
    "UNSWAG_ERR_BAD_ACTIVATION: unknown activation, or none fits this call",
    "UNSWAG_ERR_BAD_BITS: bits not valid for this activation (exact: 1; smooth: 1, 2, 4, 8)",
    "UNSWAG_ERR_BAD_PARAM: invalid parameter (slope, hardtanh bounds, fit options)",
    "UNSWAG_ERR_BAD_CODEBOOK: codebook boundaries not finite and strictly increasing",
    "UNSWAG_ERR_NO_MEMORY: out of memory",
    "UNSWAG_ERR_CUDA_NOT_BUILT: this libunswag was built without CUDA (rebuild with nvcc on PATH)",
    "UNSWAG_ERR_CUDA_NO_DEVICE: no usable CUDA device",
    "UNSWAG_ERR_CUDA_LAUNCH: a CUDA kernel launch failed",
    "UNSWAG_ERR_BAD_POINTER: a pointer is not usable on this device",
};

const char *unswag_status_string(unswag_status status) {
  if ((unsigned)status >= UNSWAG_STATUS_COUNT_) return "UNSWAG_ERR_UNKNOWN: not an unswag_status";
  return status_names[status];
}

static _Thread_local char last_error[256];

const char *unswag_last_error(void) { return last_error; }

unswag_status unswag_fail(unswag_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

#define STR2(x) #x
#define STR(x) STR2(x)

int unswag_version(void) { return UNSWAG_VERSION_NUMBER; }

const char *unswag_version_string(void) {
  return STR(UNSWAG_VERSION_MAJOR) "." STR(UNSWAG_VERSION_MINOR) "." STR(UNSWAG_VERSION_PATCH);
}

/* API tests: version, status strings, dtype conversions (all 16-bit
 * patterns, and float rounding against the reference), and bad input:
 * every error returns its status and leaves every output byte untouched. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "check.h"
#include "reference.h"
#include "unswag.h"

static void check_version_and_status(void) {
  CHECK(unswag_version() == UNSWAG_VERSION_NUMBER, "version number");
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", UNSWAG_VERSION_MAJOR, UNSWAG_VERSION_MINOR,
           UNSWAG_VERSION_PATCH);
  CHECK(strcmp(unswag_version_string(), want) == 0, "version string %s", unswag_version_string());
  for (int s = 0; s < UNSWAG_STATUS_COUNT_; ++s)
    CHECK(strncmp(unswag_status_string((unswag_status)s), "UNSWAG_", 7) == 0, "status %d", s);
  CHECK(strstr(unswag_status_string((unswag_status)999), "UNKNOWN") != NULL, "unknown status");
  CHECK(unswag_activation_name(UNSWAG_GELU_TANH) && !unswag_activation_name((unswag_activation)99),
        "activation names");
}

static void check_conversions(void) {
  long bad16 = 0, badbf = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    uint16_t hh = (uint16_t)h;
    double want = ref_load(UNSWAG_F16, &hh, 0);
    float got = unswag_f16_to_f32(hh);
    if (!(got == want || (isnan(got) && isnan(want))) ||
        (got == 0 && !signbit(got) != !signbit(want)))
      ++bad16;
    /* round trip: every half value converts back to itself (NaN stays NaN) */
    uint16_t back = unswag_f32_to_f16(got);
    if (!isnan(got) && back != hh) ++bad16;
    want = ref_load(UNSWAG_BF16, &hh, 0);
    got = unswag_bf16_to_f32(hh);
    if (!(got == want || (isnan(got) && isnan(want)))) ++badbf;
    if (!isnan(got) && unswag_f32_to_bf16(got) != hh) ++badbf;
  }
  CHECK(bad16 == 0, "f16 <-> f32: %ld wrong", bad16);
  CHECK(badbf == 0, "bf16 <-> f32: %ld wrong", badbf);
  /* float -> 16 bit rounding: every float whose top bits sweep all exponents,
   * with low bits around the tie points */
  long bad = 0;
  for (uint32_t hi = 0; hi < 0x10000; ++hi) {
    static const uint32_t lows[] = {0,      1,      0xFFF,  0x1000, 0x1001, 0x1FFF,
                                    0x2000, 0x7FFF, 0x8000, 0x8001, 0xFFFF};
    for (size_t k = 0; k < sizeof lows / sizeof *lows; ++k) {
      uint32_t u = hi << 16 | lows[k];
      float f;
      memcpy(&f, &u, 4);
      if (isnan(f)) {
        if (!((unswag_f32_to_f16(f) & 0x7FFF) > 0x7C00) ||
            !((unswag_f32_to_bf16(f) & 0x7FFF) > 0x7F80))
          ++bad;
        continue;
      }
      if (unswag_f32_to_f16(f) != ref_round_bits(UNSWAG_F16, f)) ++bad;
      if (unswag_f32_to_bf16(f) != ref_round_bits(UNSWAG_BF16, f)) ++bad;
    }
  }
  CHECK(bad == 0, "f32 -> 16-bit rounding: %ld wrong", bad);
}

/* Runs a forward and a backward call expected to fail with `want`; checks
 * that no output byte changed. */
static void expect_fail(const char *what, unswag_status want, const unswag_op *op, unswag_dtype dt,
                        int null_x, int null_y, int null_c, size_t n) {
  unsigned char x[64] = {0}, y[64], c[64];
  memset(y, 0xA5, sizeof y);
  memset(c, 0x5A, sizeof c);
  unswag_status s =
      unswag_forward(op, dt, null_x ? NULL : x, null_y ? NULL : y, null_c ? NULL : c, n);
  CHECK(s == want, "%s: forward status %d, want %d (%s)", what, s, want, unswag_last_error());
  s = unswag_backward(op, dt, null_x ? NULL : x, null_c ? NULL : c, null_y ? NULL : y, n);
  CHECK(s == want, "%s: backward status %d, want %d", what, s, want);
  int untouched = 1;
  for (size_t i = 0; i < sizeof y; ++i) untouched &= y[i] == 0xA5 && c[i] == 0x5A;
  CHECK(want == UNSWAG_OK || untouched, "%s: an output byte was written on error", what);
  CHECK(s == UNSWAG_OK || unswag_last_error()[0] != '\0', "%s: no error detail", what);
}

static void check_bad_input(void) {
  unswag_op relu = unswag_op_make(UNSWAG_RELU, 1), silu2 = unswag_op_make(UNSWAG_SILU, 2);
  expect_fail("null x", UNSWAG_ERR_NULL_POINTER, &relu, UNSWAG_F32, 1, 0, 0, 4);
  expect_fail("null y", UNSWAG_ERR_NULL_POINTER, &relu, UNSWAG_F32, 0, 1, 0, 4);
  expect_fail("null codes", UNSWAG_ERR_NULL_POINTER, &silu2, UNSWAG_BF16, 0, 0, 1, 4);
  expect_fail("null op", UNSWAG_ERR_NULL_POINTER, NULL, UNSWAG_F32, 0, 0, 0, 4);
  expect_fail("n = 0 with nulls is fine", UNSWAG_OK, &relu, UNSWAG_F32, 1, 1, 1, 0);
  expect_fail("size overflow", UNSWAG_ERR_SIZE_OVERFLOW, &relu, UNSWAG_F32, 0, 0, 0, SIZE_MAX / 2);
  expect_fail("bad dtype", UNSWAG_ERR_BAD_DTYPE, &relu, (unswag_dtype)7, 0, 0, 0, 4);
  expect_fail("negative dtype", UNSWAG_ERR_BAD_DTYPE, &relu, (unswag_dtype)-1, 0, 0, 0, 4);
  unswag_op op = relu;
  op.act = (unswag_activation)42;
  expect_fail("unknown activation", UNSWAG_ERR_BAD_ACTIVATION, &op, UNSWAG_F32, 0, 0, 0, 4);
  op = unswag_op_make(UNSWAG_RELU, 2);
  expect_fail("relu with 2 bits", UNSWAG_ERR_BAD_BITS, &op, UNSWAG_F32, 0, 0, 0, 4);
  op = unswag_op_make(UNSWAG_SILU, 3);
  expect_fail("silu with 3 bits", UNSWAG_ERR_BAD_BITS, &op, UNSWAG_F32, 0, 0, 0, 4);
  op = unswag_op_make(UNSWAG_GELU, 16);
  expect_fail("gelu with 16 bits", UNSWAG_ERR_BAD_BITS, &op, UNSWAG_F32, 0, 0, 0, 4);
  op = unswag_op_make(UNSWAG_HARDTANH, 1);
  op.lo = 1.0f, op.hi = 1.0f;
  expect_fail("hardtanh lo == hi", UNSWAG_ERR_BAD_PARAM, &op, UNSWAG_F32, 0, 0, 0, 4);
  op.lo = 3.0f, op.hi = -1.0f;
  expect_fail("hardtanh lo > hi", UNSWAG_ERR_BAD_PARAM, &op, UNSWAG_F32, 0, 0, 0, 4);
  op.lo = NAN, op.hi = 1.0f;
  expect_fail("hardtanh NaN lo", UNSWAG_ERR_BAD_PARAM, &op, UNSWAG_F32, 0, 0, 0, 4);
  op = unswag_op_make(UNSWAG_LEAKY_RELU, 1);
  op.slope = NAN;
  expect_fail("leaky NaN slope", UNSWAG_ERR_BAD_PARAM, &op, UNSWAG_F16, 0, 0, 0, 4);
  op.slope = INFINITY;
  expect_fail("leaky Inf slope", UNSWAG_ERR_BAD_PARAM, &op, UNSWAG_F16, 0, 0, 0, 4);

  unswag_codebook cb;
  unswag_codebook_builtin(UNSWAG_SILU, 2, &cb);
  op = unswag_op_make(UNSWAG_SILU, 2);
  op.codebook = &cb;
  expect_fail("custom codebook ok", UNSWAG_OK, &op, UNSWAG_F32, 0, 0, 0, 4);
  float t = cb.boundaries[0];
  cb.boundaries[0] = cb.boundaries[1], cb.boundaries[1] = t;
  expect_fail("unsorted codebook", UNSWAG_ERR_BAD_CODEBOOK, &op, UNSWAG_F32, 0, 0, 0, 4);
  unswag_codebook_builtin(UNSWAG_SILU, 2, &cb);
  cb.boundaries[1] = cb.boundaries[0];
  expect_fail("repeated boundary", UNSWAG_ERR_BAD_CODEBOOK, &op, UNSWAG_F32, 0, 0, 0, 4);
  unswag_codebook_builtin(UNSWAG_SILU, 2, &cb);
  cb.levels[3] = NAN;
  expect_fail("NaN level", UNSWAG_ERR_BAD_CODEBOOK, &op, UNSWAG_F32, 0, 0, 0, 4);
  unswag_codebook_builtin(UNSWAG_SILU, 4, &cb);
  expect_fail("codebook bits != op bits", UNSWAG_ERR_BAD_CODEBOOK, &op, UNSWAG_F32, 0, 0, 0, 4);

  unswag_cpu_options bad_path = {(unswag_cpu_path)9, 0}, bad_threads = {UNSWAG_PATH_AUTO, -1};
  unsigned char x[16] = {0}, y[16], c[16];
  memset(y, 0xA5, sizeof y);
  memset(c, 0xA5, sizeof c);
  CHECK(unswag_forward_advanced(&relu, UNSWAG_F32, x, y, c, 4, &bad_path) == UNSWAG_ERR_BAD_PARAM,
        "bad path");
  CHECK(
      unswag_forward_advanced(&relu, UNSWAG_F32, x, y, c, 4, &bad_threads) == UNSWAG_ERR_BAD_PARAM,
      "bad thread count");
  int untouched = 1;
  for (size_t i = 0; i < sizeof y; ++i) untouched &= y[i] == 0xA5 && c[i] == 0xA5;
  CHECK(untouched, "bad options wrote output");

  size_t nb = 77;
  CHECK(unswag_code_bytes(10, 2, &nb) == UNSWAG_OK && nb == 3, "code bytes 10x2 = %zu", nb);
  CHECK(unswag_code_bytes(9, 1, &nb) == UNSWAG_OK && nb == 2, "code bytes 9x1");
  CHECK(unswag_code_bytes(3, 8, &nb) == UNSWAG_OK && nb == 3, "code bytes 3x8");
  nb = 77;
  CHECK(unswag_code_bytes(SIZE_MAX, 8, &nb) == UNSWAG_ERR_SIZE_OVERFLOW && nb == 77, "overflow");
  CHECK(unswag_code_bytes(5, 3, &nb) == UNSWAG_ERR_BAD_BITS && nb == 77, "bits 3");
  CHECK(unswag_code_bytes(5, 1, NULL) == UNSWAG_ERR_NULL_POINTER, "null out");

  /* CUDA entry points in this build report clearly and write nothing */
  if (!unswag_cuda_built()) {
    unswag_status s = unswag_forward_cuda(&relu, UNSWAG_F32, x, y, c, 4, NULL);
    CHECK(s == UNSWAG_ERR_CUDA_NOT_BUILT, "cuda not built: %d", s);
    s = unswag_backward_cuda(&relu, UNSWAG_F32, x, c, y, 4, NULL);
    CHECK(s == UNSWAG_ERR_CUDA_NOT_BUILT, "cuda not built (bwd): %d", s);
  }
  /* A CUDA build: n = 0 reports a missing device like any other call (the
   * contract), and is OK where there is one.  A host pointer with n = 1 tells
   * the two apart without calling the CUDA runtime here. */
  if (unswag_cuda_built()) {
    unswag_status probe = unswag_forward_cuda(&relu, UNSWAG_F32, x, y, c, 1, NULL);
    CHECK(probe == UNSWAG_ERR_CUDA_NO_DEVICE || probe == UNSWAG_ERR_BAD_POINTER,
          "host pointers on CUDA: %d", probe);
    unswag_status want = probe == UNSWAG_ERR_CUDA_NO_DEVICE ? probe : UNSWAG_OK;
    unswag_status s = unswag_forward_cuda(&relu, UNSWAG_F32, x, y, c, 0, NULL);
    CHECK(s == want, "forward_cuda n = 0: %d (want %d)", s, want);
    s = unswag_backward_cuda(&relu, UNSWAG_F32, x, c, y, 0, NULL);
    CHECK(s == want, "backward_cuda n = 0: %d (want %d)", s, want);
  }
}

int main(void) {
  check_version_and_status();
  check_conversions();
  check_bad_input();
  CHECK_SUMMARY("test_api");
}

/* Kernel tests against the plain reference:
 *  - fp16 / bf16: all 65,536 bit patterns, every activation and k;
 *  - fp32: 10^6 random values (random bit patterns and normals) plus specials;
 *  - scalar, vectorised and threaded paths write the same bytes, run after run;
 *  - every n from 0 to 300 at unaligned offsets, with guard bytes.
 * Quick mode (argument --quick or UNSWAG_TEST_QUICK=1; the sanitizer and
 * clang runs of scripts/test.sh): every 13th 16-bit pattern (all exponents,
 * both signs), 10^5 fp32 values, tails for every n at 2 of the 5 offsets. */
#include <math.h>
#define UNSWAG_PI 3.14159265358979323846
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "cpu_variant.h"
#include "test_data.h"
#include "reference.h"
#include "unswag.h"

static const unswag_dtype DTYPES[] = {UNSWAG_F32, UNSWAG_F16, UNSWAG_BF16};
static const char *DT_NAMES[] = {"f32", "f16", "bf16"};

/* Every op under test: 4 exact (1 bit) + 3 smooth x 4 bits. */
static int make_ops(unswag_op *ops) {
  int k = 0;
  ops[k++] = unswag_op_make(UNSWAG_RELU, 1);
  ops[k] = unswag_op_make(UNSWAG_LEAKY_RELU, 1);
  ops[k++].slope = 0.2f;
  ops[k++] = unswag_op_make(UNSWAG_RELU6, 1);
  ops[k] = unswag_op_make(UNSWAG_HARDTANH, 1);
  ops[k].lo = -0.75f;
  ops[k++].hi = 2.5f;
  for (int a = UNSWAG_SILU; a <= UNSWAG_GELU_TANH; ++a)
    for (int b = 1; b <= 8; b *= 2) ops[k++] = unswag_op_make((unswag_activation)a, b);
  return k;
}

static int quick; /* see the top of the file */

/* exhaustive: 16-bit pattern i (quick: 13 i mod 2^16, all distinct) */
static void fill_inputs(unswag_dtype dt, void *x, size_t n, int exhaustive) {
  for (size_t i = 0; i < n; ++i) {
    if (dt != UNSWAG_F32) {
      uint16_t h = (uint16_t)(exhaustive ? (quick ? 13 * i : i) : rng());
      memcpy((char *)x + 2 * i, &h, 2);
      continue;
    }
    float f;
    uint32_t u = (uint32_t)rng();
    if (i % 3 == 0) memcpy(&f, &u, 4);                  /* any bit pattern */
    else if (i % 3 == 1) f = (float)(3 * rng_normal()); /* typical values */
    else f = (float)(20 * rng_normal());                /* tails */
    memcpy((char *)x + 4 * i, &f, 4);
  }
}

static const float SPECIALS[] = {
    0.0f,          -0.0f,          INFINITY, -INFINITY,       NAN,
    -NAN,          1e-45f,         -1e-45f,  1.17549435e-38f, -1.17549435e-38f,
    3.4028235e38f, -3.4028235e38f, 6.0f,     -1.0f,           1.0f,
    2.5f,          -0.75f,         88.7f,    -88.7f,          -103.0f,
    -13.0f};

/* Checks one forward + backward of op on x[0..n) in every path. */
static void check_op(const unswag_op *op, unswag_dtype dt, const void *x, size_t n,
                     const char *what) {
  const size_t es = unswag_dtype_size(dt);
  size_t cbytes;
  unswag_code_bytes(n, op->bits, &cbytes);
  unswag_codebook cb;
  if (!unswag_activation_is_exact(op->act)) unswag_codebook_builtin(op->act, op->bits, &cb);
  else cb.bits = 1;

  static const unswag_cpu_path paths[] = {UNSWAG_PATH_SCALAR, UNSWAG_PATH_VECTOR,
                                          UNSWAG_PATH_THREADED};
  void *y[3], *dx[3];
  uint8_t *codes[3];
  void *dy = malloc(n * es + 1);
  for (size_t i = 0; i < n; ++i) { /* random upstream gradient, finite */
    uint32_t u = ref_round_bits(dt, rng_normal());
    memcpy((char *)dy + i * es, &u, es);
  }
  for (int p = 0; p < 3; ++p) {
    y[p] = malloc(n * es + 1);
    dx[p] = malloc(n * es + 1);
    codes[p] = malloc(cbytes + 1);
    unswag_cpu_options o = {paths[p], p == 2 ? 2 : 0};
    unswag_status s1 = unswag_forward_advanced(op, dt, x, y[p], codes[p], n, &o);
    unswag_status s2 = unswag_backward_advanced(op, dt, dy, codes[p], dx[p], n, &o);
    CHECK(s1 == UNSWAG_OK && s2 == UNSWAG_OK, "%s: status %d %d", what, s1, s2);
  }
  /* all paths: the same bytes */
  for (int p = 1; p < 3; ++p) {
    CHECK(memcmp(y[0], y[p], n * es) == 0, "%s: y differs between scalar and path %d", what, p);
    CHECK(memcmp(codes[0], codes[p], cbytes) == 0, "%s: codes differ, path %d", what, p);
    CHECK(memcmp(dx[0], dx[p], n * es) == 0, "%s: dx differs, path %d", what, p);
  }
  int exact = unswag_activation_is_exact(op->act);
  long bad_code = 0, bad_y = 0, bad_dx = 0;
  for (size_t i = 0; i < n; ++i) {
    double xv = ref_load(dt, x, i);
    uint32_t c = ref_unpack(codes[0], i, op->bits);
    if (c != ref_code(op, &cb, (float)xv)) {
      if (!bad_code++)
        fprintf(stderr, "  %s: x=%a code %u want %u\n", what, xv, c, ref_code(op, &cb, (float)xv));
    }
    uint32_t want = ref_round_bits(dt, ref_activation(op, xv));
    uint64_t d = ref_ulp_diff(dt, ref_bits(dt, y[0], i), want);
    if (exact ? d != 0 : d > 1) {
      if (!bad_y++)
        fprintf(stderr, "  %s: x=%a y=%a ulps %llu\n", what, xv, ref_load(dt, y[0], i),
                (unsigned long long)d);
    }
    /* computed NaNs are the canonical quiet NaN on every backend */
    if (!exact && isnan(ref_load(dt, y[0], i)) &&
        ref_bits(dt, y[0], i) != ref_round_bits(dt, NAN)) {
      if (!bad_y++) fprintf(stderr, "  %s: non-canonical NaN %x\n", what, ref_bits(dt, y[0], i));
    }
    uint32_t want_dx = ref_backward_bits(op, &cb, dt, ref_bits(dt, dy, i), c);
    if (ref_bits(dt, dx[0], i) != want_dx) {
      if (!bad_dx++)
        fprintf(stderr, "  %s: dx bits %x want %x\n", what, ref_bits(dt, dx[0], i), want_dx);
    }
  }
  CHECK(bad_code == 0, "%s: %ld codes differ from the reference bucket", what, bad_code);
  CHECK(bad_y == 0, "%s: %ld outputs beyond %s of the reference", what, bad_y,
        exact ? "0 ulp" : "1 ulp");
  CHECK(bad_dx == 0, "%s: %ld backward values differ from dy * level", what, bad_dx);
  /* unused high bits of the last code byte are zero */
  if (n * op->bits % 8) {
    uint32_t used = (uint32_t)(n * op->bits % 8);
    CHECK((codes[0][cbytes - 1] >> used) == 0, "%s: high bits of last code byte set", what);
  }
  /* repeated runs: the same bytes */
  void *y2 = malloc(n * es + 1);
  uint8_t *c2 = malloc(cbytes + 1);
  unswag_forward(op, dt, x, y2, c2, n);
  CHECK(memcmp(y2, y[0], n * es) == 0 && memcmp(c2, codes[0], cbytes) == 0,
        "%s: a second run differs", what);
  free(y2);
  free(c2);
  for (int p = 0; p < 3; ++p) {
    free(y[p]);
    free(dx[p]);
    free(codes[p]);
  }
  free(dy);
}

/* Tails and alignment: every n in [0, 300] at element offsets 0..3 plus
 * an odd byte address, compared to one whole-buffer scalar run; bytes
 * around the outputs must stay untouched. */
static void check_tails(const unswag_op *op, unswag_dtype dt) {
  const size_t es = unswag_dtype_size(dt), N = 300, PAD = 64;
  unsigned char *xbuf = malloc((N + 8) * es + PAD);
  fill_inputs(dt, xbuf, N + 8, 0);
  for (size_t n = 0; n <= N; ++n) {
    for (int off = 0; off < 5; off += quick ? 4 : 1) {
      /* off 4: an odd byte address (not even element-aligned) */
      size_t byte_off = off < 4 ? (size_t)off * es : 1;
      const unsigned char *x = xbuf + byte_off;
      size_t cbytes;
      unswag_code_bytes(n, op->bits, &cbytes);
      unsigned char ybuf[320 * 4 + 2 * 64], cbuf[320 + 2 * 64], dxbuf[320 * 4 + 2 * 64];
      unsigned char yref[320 * 4], cref[320], dxref[320 * 4];
      memset(ybuf, 0xA5, sizeof ybuf);
      memset(cbuf, 0xA5, sizeof cbuf);
      memset(dxbuf, 0xA5, sizeof dxbuf);
      unsigned char *y = ybuf + PAD + byte_off, *codes = cbuf + PAD + off,
                    *dx = dxbuf + PAD + byte_off;
      unswag_cpu_options scalar = {UNSWAG_PATH_SCALAR, 0};
      unswag_forward_advanced(op, dt, x, yref, cref, n, &scalar);
      unswag_backward_advanced(op, dt, x, cref, dxref, n, &scalar); /* x as dy */
      unswag_cpu_options thr = {n % 2 ? UNSWAG_PATH_THREADED : UNSWAG_PATH_VECTOR, 2};
      unswag_status s1 = unswag_forward_advanced(op, dt, x, y, codes, n, &thr);
      unswag_status s2 = unswag_backward_advanced(op, dt, x, codes, dx, n, &thr);
      int ok = s1 == UNSWAG_OK && s2 == UNSWAG_OK && memcmp(y, yref, n * es) == 0 &&
               memcmp(codes, cref, cbytes) == 0 && memcmp(dx, dxref, n * es) == 0;
      for (size_t i = 0; i < sizeof ybuf; ++i)
        if ((ybuf + i < y || ybuf + i >= y + n * es) && ybuf[i] != 0xA5) ok = 0;
      for (size_t i = 0; i < sizeof dxbuf; ++i)
        if ((dxbuf + i < dx || dxbuf + i >= dx + n * es) && dxbuf[i] != 0xA5) ok = 0;
      for (size_t i = 0; i < sizeof cbuf; ++i)
        if ((cbuf + i < codes || cbuf + i >= codes + cbytes) && cbuf[i] != 0xA5) ok = 0;
      CHECK(ok, "tails: %s %s bits=%d n=%zu off=%d", unswag_activation_name(op->act), DT_NAMES[dt],
            op->bits, n, off);
    }
  }
  free(xbuf);
}

/* In-place: x == y and dy == dx give the same bytes as separate buffers. */
static void check_in_place(const unswag_op *op, unswag_dtype dt) {
  const size_t n = 4099, es = unswag_dtype_size(dt);
  size_t cbytes;
  unswag_code_bytes(n, op->bits, &cbytes);
  unsigned char *x = malloc(n * es), *y = malloc(n * es), *buf = malloc(n * es);
  uint8_t *c1 = malloc(cbytes), *c2 = malloc(cbytes);
  fill_inputs(dt, x, n, 0);
  memcpy(buf, x, n * es);
  unswag_forward(op, dt, x, y, c1, n);
  unswag_forward(op, dt, buf, buf, c2, n);
  CHECK(memcmp(buf, y, n * es) == 0 && memcmp(c1, c2, cbytes) == 0, "in-place forward %s",
        unswag_activation_name(op->act));
  unswag_backward(op, dt, x, c1, y, n);
  memcpy(buf, x, n * es);
  unswag_backward(op, dt, buf, c1, buf, n);
  CHECK(memcmp(buf, y, n * es) == 0, "in-place backward %s", unswag_activation_name(op->act));
  free(x), free(y), free(buf), free(c1), free(c2);
}

int main(int argc, char **argv) {
  rng_seed(0x9E3779B97F4A7C15ull);
  const char *env = getenv("UNSWAG_TEST_QUICK");
  quick = (argc > 1 && strcmp(argv[1], "--quick") == 0) || (env && strcmp(env, "1") == 0);
  const size_t n32 = quick ? 100000 : 1000000, n16 = quick ? 65536 / 13 + 1 : 65536;
  unswag_op ops[16];
  int nops = make_ops(ops);
  char what[128];
  for (int d = 0; d < 3; ++d) {
    unswag_dtype dt = DTYPES[d];
    size_t n = dt == UNSWAG_F32 ? n32 + sizeof SPECIALS / sizeof *SPECIALS : n16;
    void *x = malloc(n * unswag_dtype_size(dt));
    fill_inputs(dt, x, n, 1);
    if (dt == UNSWAG_F32) memcpy((float *)x + n32, SPECIALS, sizeof SPECIALS);
    for (int k = 0; k < nops; ++k) {
      snprintf(what, sizeof what, "%s %s bits=%d", unswag_activation_name(ops[k].act), DT_NAMES[d],
               ops[k].bits);
      check_op(&ops[k], dt, x, n, what);
      check_tails(&ops[k], dt);
      check_in_place(&ops[k], dt);
    }
    free(x);
  }
  if (quick) printf("test_kernels: quick mode (a sample of the inputs)\n");
  check_cpu_variant("test_kernels");
  CHECK_SUMMARY("test_kernels");
}

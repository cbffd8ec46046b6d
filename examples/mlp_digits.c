/*
 * mlp_digits - UnSwag's first-run demo: a small MLP trained in pure C on the
 * UCI handwritten digits (1797 8x8 images, examples/data/digits.csv.gz).
 *
 *   mlp_digits DIGITS.csv [--epochs N]
 *
 * (scripts/demo.sh decompresses the data and runs this.)
 *
 * Model: 64 -> 128 -> act -> 128 -> act -> 10, softmax cross-entropy,
 * minibatch SGD with momentum, fixed seed.  Three pairs of runs, each pair
 * with the same initial weights and the same minibatches:
 *
 *   relu  fp32  vs relu  UnSwag 1-bit   (exact: the gradients are bitwise equal)
 *   silu  fp32  vs silu  UnSwag k=2     (approximate derivative, 4 levels)
 *   gelu  fp32  vs gelu  UnSwag k=2     (approximate derivative, 4 levels)
 *
 * Every activation's forward runs through unswag_forward in fp32.  The fp32
 * runs keep the fp32 pre-activation for the backward pass and compute the
 * derivative exactly (relu: x > 0; silu/gelu: unswag_derivative in double).
 * The UnSwag runs keep only the packed k-bit code of the pre-activation and
 * call unswag_backward: dx = dy * level[code].
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "unswag.h"

/* ---- sizes and hyper-parameters ---------------------------------------------- */

enum { N_IN = 64, N_HID = 128, N_OUT = 10, N_CLASSES = 10 };
enum { N_ALL = 1797, N_TRAIN = 1500, N_TEST = N_ALL - N_TRAIN };
enum { BATCH = 50, STEPS_PER_EPOCH = N_TRAIN / BATCH };
#define DEFAULT_EPOCHS 20
#define LR 0.05f
#define MOMENTUM 0.9f
#define SEED 20240611u

/* ---- small helpers ------------------------------------------------------------ */

static double now_s(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xmalloc(size_t bytes) {
  void *p = calloc(1, bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "mlp_digits: out of memory (%zu bytes)\n", bytes);
    exit(1);
  }
  return p;
}

static void check(unswag_status s, const char *what) {
  if (s != UNSWAG_OK) {
    fprintf(stderr, "mlp_digits: %s failed: %s\n  %s\n", what, unswag_status_string(s),
            unswag_last_error());
    exit(1);
  }
}

/* splitmix64: a fixed, portable random stream */
static uint64_t rng_next(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static float rng_uniform(uint64_t *state) { /* [0, 1) */
  return (float)(rng_next(state) >> 40) * (1.0f / 16777216.0f);
}

/* ---- the data set ---------------------------------------------------------------- */

static float g_x[N_ALL][N_IN];
static int g_y[N_ALL];

static void load_digits(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr,
            "mlp_digits: cannot open %s\n"
            "  (decompress examples/data/digits.csv.gz first, e.g.\n"
            "   gzip -dc examples/data/digits.csv.gz > build/digits.csv)\n",
            path);
    exit(1);
  }
  for (int r = 0; r < N_ALL; ++r) {
    for (int c = 0; c <= N_IN; ++c) {
      int v;
      if (fscanf(f, c == 0 ? "%d" : " ,%d", &v) != 1 || v < 0 || (c < N_IN && v > 16) ||
          (c == N_IN && v >= N_CLASSES)) {
        fprintf(stderr, "mlp_digits: %s: bad value at row %d, column %d\n", path, r + 1, c + 1);
        exit(1);
      }
      if (c < N_IN) g_x[r][c] = (float)v / 16.0f; /* pixel counts 0..16 -> [0, 1] */
      else g_y[r] = v;
    }
  }
  int extra;
  if (fscanf(f, " %d", &extra) == 1) {
    fprintf(stderr, "mlp_digits: %s has more than %d rows\n", path, N_ALL);
    exit(1);
  }
  fclose(f);
  /* A fixed shuffle before the split: the file's own order is not random
   * (its last 297 rows alone test about 4 points worse with every run). */
  uint64_t rng = SEED ^ 0xD1617Full;
  for (int i = N_ALL - 1; i > 0; --i) {
    int j = (int)(rng_next(&rng) % (uint64_t)(i + 1));
    float t[N_IN];
    memcpy(t, g_x[i], sizeof t);
    memcpy(g_x[i], g_x[j], sizeof t);
    memcpy(g_x[j], t, sizeof t);
    int ty = g_y[i];
    g_y[i] = g_y[j];
    g_y[j] = ty;
  }
}

/* ---- one training run --------------------------------------------------------------- */

typedef struct {
  float *w, *b;   /* w[in][out], b[out] */
  float *gw, *gb; /* gradients          */
  float *vw, *vb; /* momentum           */
  int in, out;
} layer;

typedef struct {
  const char *name; /* "relu fp32", "silu UnSwag k=2", ... */
  unswag_activation act;
  int use_unswag; /* 0: keep fp32 pre-activation; 1: keep k-bit codes */
  unswag_op op;
  layer l[3];
  uint64_t shuffle_rng;
  int order[N_TRAIN];
  /* activations of one minibatch */
  float *a0;         /* input batch [BATCH][N_IN]                    */
  float *z[2];       /* fp32 runs: pre-activations kept for backward */
  float *h[2];       /* post-activation outputs (inputs of the next matmul) */
  uint8_t *codes[2]; /* UnSwag runs: what is kept; fp32 runs: scratch */
  float *logits, *dlogits, *dh, *dz;
  size_t code_bytes; /* per hidden layer per step */
  size_t kept_bytes; /* what the two activations keep for backward, per step */
  float *grad0;      /* all parameter gradients of the first step */
  size_t n_params;
  double loss, acc; /* last epoch */
} run;

static void layer_init(layer *L, int in, int out, uint64_t *rng) {
  L->in = in;
  L->out = out;
  L->w = xmalloc(sizeof(float) * (size_t)in * (size_t)out);
  L->gw = xmalloc(sizeof(float) * (size_t)in * (size_t)out);
  L->vw = xmalloc(sizeof(float) * (size_t)in * (size_t)out);
  L->b = xmalloc(sizeof(float) * (size_t)out);
  L->gb = xmalloc(sizeof(float) * (size_t)out);
  L->vb = xmalloc(sizeof(float) * (size_t)out);
  const float a = sqrtf(6.0f / (float)in); /* He uniform */
  for (int i = 0; i < in * out; ++i) L->w[i] = (2.0f * rng_uniform(rng) - 1.0f) * a;
}

static void run_init(run *r, const char *name, unswag_activation act, int use_unswag, int bits) {
  memset(r, 0, sizeof *r);
  r->name = name;
  r->act = act;
  r->use_unswag = use_unswag;
  r->op = unswag_op_make(act, bits);
  check(unswag_op_validate(&r->op), "unswag_op_validate");
  uint64_t rng = SEED; /* every run: the same initial weights ... */
  layer_init(&r->l[0], N_IN, N_HID, &rng);
  layer_init(&r->l[1], N_HID, N_HID, &rng);
  layer_init(&r->l[2], N_HID, N_OUT, &rng);
  r->shuffle_rng = SEED ^ 0x5DEECE66Dull; /* ... and the same minibatches */
  for (int i = 0; i < N_TRAIN; ++i) r->order[i] = i;

  const size_t nh = (size_t)BATCH * N_HID;
  check(unswag_code_bytes(nh, bits, &r->code_bytes), "unswag_code_bytes");
  r->a0 = xmalloc(sizeof(float) * BATCH * N_IN);
  for (int k = 0; k < 2; ++k) {
    r->h[k] = xmalloc(sizeof(float) * nh);
    r->codes[k] = xmalloc(r->code_bytes);
    if (!use_unswag) r->z[k] = xmalloc(sizeof(float) * nh);
  }
  r->logits = xmalloc(sizeof(float) * BATCH * N_OUT);
  r->dlogits = xmalloc(sizeof(float) * BATCH * N_OUT);
  r->dh = xmalloc(sizeof(float) * nh);
  r->dz = xmalloc(sizeof(float) * nh);
  r->kept_bytes = 2 * (use_unswag ? r->code_bytes : nh * sizeof(float));
  for (int k = 0; k < 3; ++k) r->n_params += (size_t)(r->l[k].in + 1) * (size_t)r->l[k].out;
  r->grad0 = xmalloc(sizeof(float) * r->n_params);
}

/* out[b][j] = bias[j] + sum_i in[b][i] w[i][j] */
static void linear_forward(const layer *L, const float *in, float *out, int nb) {
  for (int b = 0; b < nb; ++b) {
    float *o = out + (size_t)b * L->out;
    for (int j = 0; j < L->out; ++j) o[j] = L->b[j];
    for (int i = 0; i < L->in; ++i) {
      const float a = in[(size_t)b * L->in + i];
      const float *w = L->w + (size_t)i * L->out;
      for (int j = 0; j < L->out; ++j) o[j] += a * w[j];
    }
  }
}

/* gw = in^T dout, gb = sum dout, din = dout w^T (din may be NULL) */
static void linear_backward(layer *L, const float *in, const float *dout, float *din, int nb) {
  memset(L->gw, 0, sizeof(float) * (size_t)L->in * (size_t)L->out);
  memset(L->gb, 0, sizeof(float) * (size_t)L->out);
  for (int b = 0; b < nb; ++b) {
    const float *d = dout + (size_t)b * L->out;
    for (int j = 0; j < L->out; ++j) L->gb[j] += d[j];
    for (int i = 0; i < L->in; ++i) {
      const float a = in[(size_t)b * L->in + i];
      float *g = L->gw + (size_t)i * L->out;
      for (int j = 0; j < L->out; ++j) g[j] += a * d[j];
    }
    if (din) {
      for (int i = 0; i < L->in; ++i) {
        const float *w = L->w + (size_t)i * L->out;
        float s = 0.0f;
        for (int j = 0; j < L->out; ++j) s += d[j] * w[j];
        din[(size_t)b * L->in + i] = s;
      }
    }
  }
}

static void sgd_update(layer *L) {
  const size_t nw = (size_t)L->in * (size_t)L->out;
  for (size_t i = 0; i < nw; ++i) {
    L->vw[i] = MOMENTUM * L->vw[i] + L->gw[i];
    L->w[i] -= LR * L->vw[i];
  }
  for (int j = 0; j < L->out; ++j) {
    L->vb[j] = MOMENTUM * L->vb[j] + L->gb[j];
    L->b[j] -= LR * L->vb[j];
  }
}

/* Hidden layer k forward: pre-activation -> h[k], through the library in
 * every run.  UnSwag runs pass pre == h[k] (in place): only the packed codes
 * outlive the call.  fp32 runs keep `pre` for their backward pass and
 * ignore the codes. */
static void act_forward(run *r, int k, const float *pre, int nb) {
  const size_t n = (size_t)nb * N_HID;
  check(unswag_forward(&r->op, UNSWAG_F32, pre, r->h[k], r->codes[k], n), "unswag_forward");
}

/* Hidden layer k backward: dz = dh * f'(pre). */
static void act_backward(run *r, int k, const float *dh, float *dz, int nb) {
  const size_t n = (size_t)nb * N_HID;
  if (r->use_unswag) {
    check(unswag_backward(&r->op, UNSWAG_F32, dh, r->codes[k], dz, n), "unswag_backward");
  } else if (r->act == UNSWAG_RELU) {
    const float *z = r->z[k];
    for (size_t i = 0; i < n; ++i) dz[i] = z[i] > 0.0f ? dh[i] : 0.0f; /* threshold_backward */
  } else {
    const float *z = r->z[k];
    for (size_t i = 0; i < n; ++i) dz[i] = dh[i] * (float)unswag_derivative(r->act, z[i]);
  }
}

/* Forward of nb rows of r->a0 into r->logits. */
static void model_forward(run *r, int nb) {
  float *pre0 = r->use_unswag ? r->h[0] : r->z[0];
  linear_forward(&r->l[0], r->a0, pre0, nb);
  act_forward(r, 0, pre0, nb);
  float *pre1 = r->use_unswag ? r->h[1] : r->z[1];
  linear_forward(&r->l[1], r->h[0], pre1, nb);
  act_forward(r, 1, pre1, nb);
  linear_forward(&r->l[2], r->h[1], r->logits, nb);
}

/* Mean softmax cross-entropy of the batch; dlogits = d(mean loss)/dlogits. */
static double softmax_xent(const float *logits, const int *labels, float *dlogits, int nb) {
  double loss = 0.0;
  for (int b = 0; b < nb; ++b) {
    const float *z = logits + (size_t)b * N_OUT;
    float *d = dlogits + (size_t)b * N_OUT;
    float m = z[0];
    for (int j = 1; j < N_OUT; ++j) m = z[j] > m ? z[j] : m;
    float s = 0.0f;
    for (int j = 0; j < N_OUT; ++j) {
      d[j] = expf(z[j] - m);
      s += d[j];
    }
    loss += (double)(logf(s) + m - z[labels[b]]);
    for (int j = 0; j < N_OUT; ++j) d[j] = d[j] / s / (float)nb;
    d[labels[b]] -= 1.0f / (float)nb;
  }
  return loss / nb;
}

static void save_grads(run *r) {
  size_t o = 0;
  for (int k = 0; k < 3; ++k) {
    size_t nw = (size_t)r->l[k].in * (size_t)r->l[k].out;
    memcpy(r->grad0 + o, r->l[k].gw, sizeof(float) * nw);
    o += nw;
    memcpy(r->grad0 + o, r->l[k].gb, sizeof(float) * (size_t)r->l[k].out);
    o += (size_t)r->l[k].out;
  }
}

static void train_epoch(run *r, int epoch) {
  /* Fisher-Yates shuffle from the run's own stream: the same in every run */
  for (int i = N_TRAIN - 1; i > 0; --i) {
    int j = (int)(rng_next(&r->shuffle_rng) % (uint64_t)(i + 1));
    int t = r->order[i];
    r->order[i] = r->order[j];
    r->order[j] = t;
  }
  double loss_sum = 0.0;
  int labels[BATCH];
  for (int s = 0; s < STEPS_PER_EPOCH; ++s) {
    for (int b = 0; b < BATCH; ++b) {
      int idx = r->order[s * BATCH + b];
      memcpy(r->a0 + (size_t)b * N_IN, g_x[idx], sizeof(float) * N_IN);
      labels[b] = g_y[idx];
    }
    model_forward(r, BATCH);
    loss_sum += softmax_xent(r->logits, labels, r->dlogits, BATCH);
    linear_backward(&r->l[2], r->h[1], r->dlogits, r->dh, BATCH);
    act_backward(r, 1, r->dh, r->dz, BATCH);
    linear_backward(&r->l[1], r->h[0], r->dz, r->dh, BATCH);
    act_backward(r, 0, r->dh, r->dz, BATCH);
    linear_backward(&r->l[0], r->a0, r->dz, NULL, BATCH);
    if (epoch == 0 && s == 0) save_grads(r);
    for (int k = 0; k < 3; ++k) sgd_update(&r->l[k]);
  }
  r->loss = loss_sum / STEPS_PER_EPOCH;
}

static double test_accuracy(run *r) {
  int correct = 0;
  for (int base = N_TRAIN; base < N_ALL; base += BATCH) {
    int nb = N_ALL - base < BATCH ? N_ALL - base : BATCH;
    memcpy(r->a0, g_x[base], sizeof(float) * N_IN * (size_t)nb);
    model_forward(r, nb);
    for (int b = 0; b < nb; ++b) {
      const float *z = r->logits + (size_t)b * N_OUT;
      int best = 0;
      for (int j = 1; j < N_OUT; ++j)
        if (z[j] > z[best]) best = j;
      correct += best == g_y[base + b];
    }
  }
  return 100.0 * correct / N_TEST;
}

static int same_weights(const run *a, const run *b) {
  for (int k = 0; k < 3; ++k) {
    size_t nw = (size_t)a->l[k].in * (size_t)a->l[k].out;
    if (memcmp(a->l[k].w, b->l[k].w, sizeof(float) * nw) ||
        memcmp(a->l[k].b, b->l[k].b, sizeof(float) * (size_t)a->l[k].out))
      return 0;
  }
  return 1;
}

static double cosine(const float *a, const float *b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += (double)a[i] * b[i];
    aa += (double)a[i] * a[i];
    bb += (double)b[i] * b[i];
  }
  return ab / sqrt(aa * bb);
}

static void print_codebook(unswag_activation act, int bits) {
  unswag_codebook cb;
  check(unswag_codebook_builtin(act, bits, &cb), "unswag_codebook_builtin");
  int m = 1 << bits;
  printf("  %-4s k=%d built-in codebook: boundaries [", unswag_activation_name(act), bits);
  for (int j = 0; j < m - 1; ++j) printf("%s%.3f", j ? ", " : "", (double)cb.boundaries[j]);
  printf("]  levels [");
  for (int j = 0; j < m; ++j) printf("%s%.3f", j ? ", " : "", (double)cb.levels[j]);
  printf("]\n         rms_error %.4f (RMS of f' - q under a standard normal weighting)\n",
         cb.rms_error);
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  const char *path = NULL;
  int epochs = DEFAULT_EPOCHS;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--epochs") && i + 1 < argc) {
      epochs = atoi(argv[++i]);
    } else if (argv[i][0] != '-' && !path) {
      path = argv[i];
    } else {
      path = NULL;
      break;
    }
  }
  if (!path || epochs < 1) {
    fprintf(stderr, "usage: %s DIGITS.csv [--epochs N]   (N >= 1, default %d)\n", argv[0],
            DEFAULT_EPOCHS);
    return 2;
  }
  const double t0 = now_s();
  load_digits(path);

  printf("UnSwag %s - MLP on the UCI handwritten digits (pure C)\n", unswag_version_string());
  printf("  data: %s, %d images 8x8, shuffled with a fixed seed, then %d train / %d test\n", path,
         N_ALL, N_TRAIN, N_TEST);
  printf("  model: %d -> %d -> act -> %d -> act -> %d, softmax cross-entropy\n", N_IN, N_HID, N_HID,
         N_OUT);
  printf(
      "  SGD: batch %d, lr %.3g, momentum %.2g, %d epochs, seed %u; every pair of runs\n"
      "  starts from the same weights and sees the same minibatches\n",
      BATCH, (double)LR, (double)MOMENTUM, epochs, SEED);
  printf("  forward: fp32, computed exactly through unswag_forward in every run\n");
  printf(
      "  backward: fp32 runs keep the fp32 pre-activation and use the exact f';\n"
      "            UnSwag runs keep only the packed code and call unswag_backward\n");
  printf("  relu 1-bit is exact: its gradients must be bitwise equal to the fp32 run's.\n");
  printf("  silu/gelu k=2 are approximate: f' is replaced by a 4-level step function:\n");
  print_codebook(UNSWAG_SILU, 2);
  print_codebook(UNSWAG_GELU, 2);
  printf("\n");
  fflush(stdout);

  enum { N_RUNS = 6 };
  static run runs[N_RUNS];
  run_init(&runs[0], "relu fp32", UNSWAG_RELU, 0, 1);
  run_init(&runs[1], "relu UnSwag 1-bit", UNSWAG_RELU, 1, 1);
  run_init(&runs[2], "silu fp32", UNSWAG_SILU, 0, 2);
  run_init(&runs[3], "silu UnSwag k=2", UNSWAG_SILU, 1, 2);
  run_init(&runs[4], "gelu fp32", UNSWAG_GELU, 0, 2);
  run_init(&runs[5], "gelu UnSwag k=2", UNSWAG_GELU, 1, 2);

  int relu_identical = 1;
  for (int e = 0; e < epochs; ++e) {
    for (int p = 0; p < 3; ++p) {
      run *full = &runs[2 * p], *us = &runs[2 * p + 1];
      train_epoch(full, e);
      train_epoch(us, e);
      full->acc = test_accuracy(full);
      us->acc = test_accuracy(us);
      const char *tag = p == 0 ? "1-bit" : "k=2  ";
      printf(
          "[epoch %2d/%d] %-4s  fp32: loss %.6f  test %6.2f%%  |  UnSwag %s: loss %.6f  "
          "test %6.2f%%",
          e + 1, epochs, unswag_activation_name(full->act), full->loss, full->acc, tag, us->loss,
          us->acc);
      if (p == 0) {
        int same = full->loss == us->loss && same_weights(full, us);
        printf("  %s", same ? "(bitwise equal)" : "(DIFFERENT!)");
        if (!same) relu_identical = 0;
      }
      printf("\n");
    }
    fflush(stdout);
  }
  if (!relu_identical) {
    fprintf(stderr,
            "mlp_digits: FAILED: relu through UnSwag (1 bit) did not reproduce the fp32 run "
            "bit for bit\n");
    return 1;
  }

  printf(
      "\nFinal, after %d epochs (bytes the two activations keep for the backward pass,\n"
      "per step of %d images = %d x %d pre-activations per layer):\n\n",
      epochs, BATCH, BATCH, N_HID);
  printf("  %-18s  %9s  %10s  %14s  %8s  %s\n", "run", "test acc", "train loss", "kept/step",
         "vs fp32", "1st-step grad cos");
  printf("  %-18s  %9s  %10s  %14s  %8s  %s\n", "------------------", "---------", "----------",
         "--------------", "-------", "-----------------");
  for (int i = 0; i < N_RUNS; ++i) {
    const run *r = &runs[i];
    const run *full = &runs[i & ~1];
    char ratio[32] = "", cos[32] = "";
    if (r->use_unswag) {
      snprintf(ratio, sizeof ratio, "%.0fx less", (double)full->kept_bytes / (double)r->kept_bytes);
      snprintf(cos, sizeof cos, "%.6f", cosine(full->grad0, r->grad0, r->n_params));
    }
    printf("  %-18s  %8.2f%%  %10.6f  %8zu bytes  %8s  %s\n", r->name, r->acc, r->loss,
           r->kept_bytes, ratio, cos);
  }
  printf("\n");
  printf(
      "  relu: UnSwag 1-bit reproduced the fp32 run bit for bit in all %d epochs\n"
      "        (identical losses and identical weights), keeping 1 bit instead of 32.\n",
      epochs);
  printf(
      "  silu, gelu: k=2 uses the approximate derivative (4 levels; codebook rms_error\n"
      "        above), so the runs drift apart from their fp32 twins.  One test image is\n"
      "        %.2f%% of the test set: differences of a few images are noise, not signal.\n",
      100.0 / N_TEST);
  printf(
      "  '1st-step grad cos': cosine similarity of all parameter gradients of the very\n"
      "        first step (same weights, same batch) between the UnSwag and fp32 runs.\n");
  printf(
      "  'kept/step' counts only what the activations keep for backward (the fp32\n"
      "        pre-activation vs the packed codes, sized by unswag_code_bytes); the\n"
      "        matmuls' own saved inputs are the same in both runs and not counted.\n");
  printf("\n  total time %.1f s\n", now_s() - t0);
  return 0;
}

"""What k-bit codes cost in training on real text (issue 11).

Two small non-gated GPT-NeoX models (transformers' GPTNeoXForCausalLM, one with GELU, one
with SiLU) are trained from scratch on real English text, byte by byte, once exact and once
per code variant (apply_unswag_surgery(model, bits=k), optionally with calibrated
codebooks), for several seeds.  A seed fixes the initial weights and the order of the
training batches, so the runs of one seed differ only in the activation's backward.
Reported per model and variant: the final validation loss (mean and sample standard
deviation over seeds), its difference from the exact run of the same seed (mean and sd),
and the steps needed to reach the exact run's final validation loss (per seed; the ratio
to the exact run's own count).  The noise floor is measured: the exact run of the first
seed is trained twice and the two curves compared.

The text: the Debian package ``fortunes`` (+ ``fortunes-min``; BSD licence; ~2.6 MB of
English quotations, jokes, definitions, poems, in plain text files at
/usr/share/games/fortunes).  Nothing is downloaded at run time.  A machine without the
package (the GPU machine cannot reach a package registry) gets a copy: on a machine with it,

    mkdir -p build-corpus && cp -rL /usr/share/games/fortunes build-corpus/

and carry ``build-corpus`` (git-ignored, 2.7 MB); then ``--corpus build-corpus/fortunes``.
Every record (text between ``%`` lines) of every file, files in name order; every 20th
record goes to validation, the rest to training.

Determinism: CUBLAS_WORKSPACE_CONFIG=:4096:8, torch.use_deterministic_algorithms(True) (with
warn_only: an op without a deterministic implementation is named in the results rather than
stopping the run), eager attention (the surgery's switch to SDPA is off), the loss as
log_softmax + gather (nll_loss has no deterministic CUDA kernel), no TF32, fixed batch
offsets per seed.  UnSwag's kernels are elementwise and deterministic.  So two runs with
the same seed should match bit for bit; the noise floor line says whether they did.

Default size and the time it should take (an estimate from FLOPs and kernel counts, not
yet measured on a GPU; the script prints the measured step time after each run and a
projection of the total after the first): 4 layers, hidden 256, MLP 1024, 4 heads, rotary
on a quarter of the head, byte vocabulary (256); batch 32 x 256 tokens = 8,192 tokens a
step, 600 steps (4.9 M tokens, ~2 passes over the training text).  Non-embedding
parameters 12 * 4 * 256^2 = 3.1 M; training FLOPs per token ~ 6 * 3.3 M + 12 * 4 * 256 * 256
(attention) = 23 M, 1.9e11 a step: ~0.4 ms of an H200's bf16 peak, so the step is bound by
kernel launches and Python (~500 kernels, ~10 ms a step in eager PyTorch).  Runs: 2 models
x (7 variants x 3 seeds + 1 noise-floor repeat) = 44, each 600 steps + 13 evaluations of
16 x 256 validation tokens: 44 x ~6.5 s = ~290 s, about 5 minutes.

Variants (``--variants``, comma separated): ``exact``; ``k`` (1, 2, 4, 8): built-in codebook
at k bits; ``kc``: codebook calibrated per layer on its first --cal-calls training calls;
``kr``: the same, refitted every --recal-every calls; ``ks``: stochastic codes at k bits
(unbiased, apply_unswag_surgery(codes="stochastic"); not in the default list, and no
measured result yet).

    UNSWAG_LIBRARY=build-gpu/libunswag.so PYTHONPATH=python \\
        python bench/gpu/bench_convergence.py --corpus build-corpus/fortunes --out $OUT
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings

# before torch initialises cuBLAS: its deterministic workspace
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

DEFAULT_CORPUS = "/usr/share/games/fortunes"
DEFAULT_VARIANTS = "exact,1,2,4,8,1r,2r"
VAL_EVERY = 20  # every 20th record is validation


# ---------------------------------------------------------------- the text

def read_records(path: str, max_bytes: int = 0):
    """The records of a fortune directory (or one text file): the text between lines that
    are a single '%', in file-name order; .dat index files and symlinks skipped."""
    if os.path.isdir(path):
        files = [os.path.join(path, f) for f in sorted(os.listdir(path))]
        files = [f for f in files if os.path.isfile(f) and not os.path.islink(f)
                 and not f.endswith(".dat")]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(
            f"corpus {path!r} not found: install the Debian package 'fortunes' (apt-get install "
            "fortunes) or copy /usr/share/games/fortunes from a machine that has it and pass "
            "--corpus (see this script's docstring)")
    records, total = [], 0
    for f in files:
        with open(f, "rb") as fh:
            text = fh.read()
        for rec in text.split(b"\n%\n"):
            rec = rec.strip(b"%\n")
            if rec:
                records.append(rec + b"\n")
                total += len(rec) + 1
                if max_bytes and total >= max_bytes:
                    return records
    if not records:
        raise ValueError(f"corpus {path!r} holds no text")
    return records


def split_corpus(records):
    """(train bytes, validation bytes): every VAL_EVERY-th record to validation."""
    val = b"".join(r for i, r in enumerate(records) if i % VAL_EVERY == VAL_EVERY - 1)
    train = b"".join(r for i, r in enumerate(records) if i % VAL_EVERY != VAL_EVERY - 1)
    return train, val


# ---------------------------------------------------------------- model and data

def make_model(act: str, a):
    import transformers as T
    cfg = T.GPTNeoXConfig(vocab_size=256, hidden_size=a.hidden, num_hidden_layers=a.layers,
                          num_attention_heads=a.heads, intermediate_size=4 * a.hidden,
                          hidden_act=act, max_position_embeddings=a.seq,
                          attention_dropout=0.0, hidden_dropout=0.0,
                          tie_word_embeddings=False, attn_implementation="eager")
    return T.GPTNeoXForCausalLM(cfg)


def parse_variant(v: str):
    """('exact', '') or (bits, '' | 'c' | 'r' | 's') of a variant name."""
    if v == "exact":
        return "exact", ""
    kind = v[-1] if v[-1] in "crs" else ""
    bits = int(v[:-1] if kind else v)
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"variant {v!r}: bits must be 1, 2, 4 or 8")
    return bits, kind


def batch_offsets(seed: int, steps: int, batch: int, n: int, seq: int):
    import torch
    g = torch.Generator().manual_seed(1_000_003 * seed + 17)
    return torch.randint(0, n - seq - 1, (steps, batch), generator=g)


def val_batches(val, seq: int, n_seq: int, batch: int):
    """Fixed validation windows: consecutive non-overlapping (seq + 1)-byte chunks."""
    n_seq = min(n_seq, (val.numel() - 1) // (seq + 1))
    if n_seq < 1:
        raise ValueError("validation text shorter than one sequence")
    w = val[: n_seq * (seq + 1)].view(n_seq, seq + 1)
    return [w[i:i + batch] for i in range(0, n_seq, batch)]


def lr_at(step: int, a) -> float:
    warm = max(1, a.steps // 20)
    if step < warm:
        return a.lr * (step + 1) / warm
    t = (step - warm) / max(1, a.steps - warm)
    return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def token_nll(logits, targets):
    """Per-token cross-entropy as log_softmax + gather: torch's nll_loss has no
    deterministic CUDA implementation (use_deterministic_algorithms lists it)."""
    import torch
    logp = torch.log_softmax(logits.float().reshape(-1, logits.shape[-1]), dim=-1)
    return -logp.gather(1, targets.reshape(-1, 1)).squeeze(1)


def evaluate(model, vbs, device, autocast) -> float:
    import torch
    model.eval()
    tot, cnt = 0.0, 0
    with torch.no_grad(), autocast():
        for w in vbs:
            w = w.to(device)
            logits = model(input_ids=w[:, :-1]).logits
            tot += float(token_nll(logits, w[:, 1:]).sum())
            cnt += w[:, 1:].numel()
    model.train()
    return tot / cnt


def train_run(act: str, variant: str, seed: int, data, a, device):
    """One training run; returns its record (curve, final loss, step time, report)."""
    import torch

    from unswag import apply_unswag_surgery
    train, vbs = data
    torch.manual_seed(seed)
    model = make_model(act, a).to(device)
    bits, kind = parse_variant(variant)
    report = None
    if bits != "exact":
        kw = {}
        if kind == "s":
            kw["codes"] = "stochastic"
        elif kind:
            kw["calibrate"] = a.cal_calls
            if kind == "r":
                kw["recalibrate_every"] = a.recal_every
        report = apply_unswag_surgery(model, bits=bits, attention=None, **kw)
        n_coded = sum(1 for _, p in report.patched if p.endswith("bit"))
        if n_coded != a.layers:
            raise RuntimeError(f"surgery coded {n_coded} activations, expected {a.layers}:\n"
                               f"{report}")
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            foreach=True)
    offs = batch_offsets(seed, a.steps, a.batch, train.numel(), a.seq)
    ar = torch.arange(a.seq + 1)
    use_bf16 = a.dtype == "bf16"

    def autocast():
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=use_bf16)

    curve = []
    t_train = 0.0
    for step in range(a.steps):
        if step % a.eval_every == 0:
            curve.append((step, evaluate(model, vbs, device, autocast)))
        t0 = time.perf_counter()
        w = train[offs[step][:, None] + ar].to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        with autocast():
            out = model(input_ids=w[:, :-1])
            loss = token_nll(out.logits, w[:, 1:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        t_train += time.perf_counter() - t0
        if not math.isfinite(float(loss.detach())):
            diverged = step
            break
    else:
        diverged = None
    final = evaluate(model, vbs, device, autocast)
    curve.append((a.steps, final))
    return {"model": act, "variant": variant, "seed": seed, "final_val_loss": final,
            "diverged_at": diverged,
            "curve": curve, "step_ms": 1000 * t_train / max(1, a.steps),
            "report": None if report is None else str(report)}


# ---------------------------------------------------------------- statistics

def steps_to(curve, target: float):
    """First evaluated step whose validation loss is <= target, else None."""
    for step, v in curve:
        if v <= target:
            return step
    return None


def _sd(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarise(runs, noise):
    """Per model and variant: mean/sd of the final loss, paired difference to exact,
    steps to the exact run's final loss (same seed) and its ratio to exact's own."""
    out = {}
    for act in sorted({r["model"] for r in runs}):
        mine = [r for r in runs if r["model"] == act]
        exact = {r["seed"]: r for r in mine if r["variant"] == "exact"}
        ex_final = [r["final_val_loss"] for r in exact.values()]
        ex_mean, ex_sd = statistics.fmean(ex_final), _sd(ex_final)
        rows = {}
        for v in dict.fromkeys(r["variant"] for r in mine):
            rs = [r for r in mine if r["variant"] == v]
            fin = [r["final_val_loss"] for r in rs]
            diffs, ratios, missed = [], [], 0
            for r in rs:
                e = exact.get(r["seed"])
                if e is None:
                    continue
                diffs.append(r["final_val_loss"] - e["final_val_loss"])
                s_e = steps_to(e["curve"], e["final_val_loss"])
                s_v = steps_to(r["curve"], e["final_val_loss"])
                if s_v is None:
                    missed += 1
                else:
                    ratios.append(s_v / s_e)
            mean = statistics.fmean(fin)
            rows[v] = {"final_mean": mean, "final_sd": _sd(fin), "n": len(fin),
                       "diff_mean": statistics.fmean(diffs) if diffs else None,
                       "diff_sd": _sd(diffs) if diffs else None,
                       "within_1sd_of_exact": abs(mean - ex_mean) <= ex_sd,
                       "steps_ratio_mean": statistics.fmean(ratios) if ratios else None,
                       "target_missed": missed,
                       "step_ms": statistics.fmean(r["step_ms"] for r in rs)}
        out[act] = {"exact_mean": ex_mean, "exact_sd": ex_sd, "variants": rows,
                    "noise_floor": noise.get(act)}
    return out


def noise_floor(a_run, b_run):
    """How far two exact runs with the same seed ended apart."""
    d = [abs(x[1] - y[1]) for x, y in zip(a_run["curve"], b_run["curve"])]
    return {"final_abs_diff": abs(a_run["final_val_loss"] - b_run["final_val_loss"]),
            "max_abs_diff_on_curve": max(d), "bitwise_equal": max(d) == 0.0}


def table(summary, a) -> str:
    lines = []
    for act, s in summary.items():
        nf = s["noise_floor"]
        lines.append(f"== {act}: exact final validation loss {s['exact_mean']:.4f} +/- "
                     f"{s['exact_sd']:.4f} (sd over {a.seeds} seeds)")
        if nf is not None:
            lines.append(f"   noise floor (exact, seed {a.seed0}, twice): final |diff| "
                         f"{nf['final_abs_diff']:.3g}, max over the curve "
                         f"{nf['max_abs_diff_on_curve']:.3g}"
                         + (" (bit for bit equal)" if nf["bitwise_equal"] else ""))
        lines.append(f"   {'variant':8s} {'final loss':>18s} {'minus exact (paired)':>22s} "
                     f"{'<=1sd':>6s} {'steps/exact':>11s} {'missed':>6s} {'ms/step':>8s}")
        for v, r in s["variants"].items():
            diff = ("" if r["diff_mean"] is None
                    else f"{r['diff_mean']:+.4f} +/- {r['diff_sd']:.4f}")
            ratio = "" if r["steps_ratio_mean"] is None else f"{r['steps_ratio_mean']:.3f}"
            lines.append(f"   {v:8s} {r['final_mean']:.4f} +/- {r['final_sd']:.4f} "
                         f"{diff:>22s} {'yes' if r['within_1sd_of_exact'] else 'no':>6s} "
                         f"{ratio:>11s} {r['target_missed']:>3d}/{r['n']:<2d} "
                         f"{r['step_ms']:8.1f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default=os.environ.get("UNSWAG_CORPUS", DEFAULT_CORPUS))
    p.add_argument("--max-bytes", type=int, default=0, help="read at most this much text")
    p.add_argument("--models", default="gelu,silu")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--val-seqs", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--cal-calls", type=int, default=10)
    p.add_argument("--recal-every", type=int, default=100)
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                   help="autocast dtype (default: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-noise-run", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args(argv)
    for v in a.variants.split(","):
        parse_variant(v)
    if "exact" not in a.variants.split(","):
        p.error("--variants must include exact (the reference)")
    return a


def main(argv=None) -> dict:
    import torch
    a = parse_args(argv)
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.dtype = a.dtype or ("bf16" if dev == "cuda" else "fp32")
    # warn_only: an op without a deterministic implementation warns (recorded in the
    # results) instead of stopping a GPU run that cannot be repeated cheaply
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # a memset per empty()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    train_b, val_b = split_corpus(read_records(a.corpus, a.max_bytes))
    train = torch.frombuffer(bytearray(train_b), dtype=torch.uint8).long()
    val = torch.frombuffer(bytearray(val_b), dtype=torch.uint8).long()
    data = (train, val_batches(val, a.seq, a.val_seqs, a.batch))
    device_name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    head = (f"bench_convergence: {device_name}, {time.strftime('%Y-%m-%d %H:%M')}, torch "
            f"{torch.__version__}; corpus {a.corpus}: {len(train_b)} training / {len(val_b)} "
            f"validation bytes; {a.layers} layers x {a.hidden}, batch {a.batch} x {a.seq}, "
            f"{a.steps} steps, {a.dtype}, seeds {a.seed0}..{a.seed0 + a.seeds - 1}")
    print(head, flush=True)
    models, variants = a.models.split(","), a.variants.split(",")
    plan = [(m, v, s) for m in models for v in variants
            for s in range(a.seed0, a.seed0 + a.seeds)]
    if not a.no_noise_run:
        plan += [(m, "exact", a.seed0) for m in models]
    runs, noise, t_start = [], {}, time.perf_counter()
    for i, (m, v, s) in enumerate(plan):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = train_run(m, v, s, data, a, dev)
        r["nondeterministic_warnings"] = sorted({str(w.message)[:200] for w in caught
                                                 if "determinis" in str(w.message)})
        repeat = i >= len(plan) - (0 if a.no_noise_run else len(models))
        if repeat:
            first = next(x for x in runs if (x["model"], x["variant"], x["seed"]) == (m, v, s))
            noise[m] = noise_floor(first, r)
        else:
            runs.append(r)
        el = time.perf_counter() - t_start
        print(f"[{i + 1}/{len(plan)}] {m} {v} seed {s}{' (repeat)' if repeat else ''}: final "
              f"{r['final_val_loss']:.4f}, {r['step_ms']:.1f} ms/step; {el:.0f} s so far, "
              f"~{el / (i + 1) * (len(plan) - i - 1):.0f} s to go", flush=True)
        write_results(a, head, device_name, runs, noise, final=i == len(plan) - 1)
    return write_results(a, head, device_name, runs, noise, final=True, show=True)


def write_results(a, head, device_name, runs, noise, final: bool, show: bool = False):
    """$OUT/convergence-<models>.json and .txt; rewritten after every run, so a run cut
    short by a time limit still leaves what it finished (marked partial)."""
    with_exact = [r for r in runs if any(x["model"] == r["model"] and x["variant"] == "exact"
                                         for x in runs)]
    summary = summarise(with_exact, noise) if with_exact else {}
    text = head + ("" if final else f"\nPARTIAL: {len(runs)} runs finished") + "\n" + \
        table(summary, a)
    nondet = sorted({m for r in runs for m in r.get("nondeterministic_warnings", [])})
    text += "\nops without a deterministic implementation: " + ("; ".join(nondet) or "none")
    if show:
        print(text)
    reports = {f"{r['model']} {r['variant']}": r["report"] for r in runs
               if r["report"] and r["seed"] == a.seed0}
    result = {"header": head, "final": final, "nondeterministic_ops": nondet, "args": vars(a),
              "device": device_name, "summary": summary, "runs": runs, "reports": reports}
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, "convergence-" + a.models.replace(",", "-"))
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".txt", "w") as f:
        f.write(text + f"\n\nSurgery reports (seed {a.seed0}):\n")
        for k, rep in reports.items():
            f.write(f"-- {k}\n{rep}\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""unswag.jax on the GPU: every figure of issue 13 as a ratio against jax.nn
measured in the same run, the impl="auto" decision table, then the JAX tests on the GPU.

    python bench/gpu/bench_jax.py            # benchmark + profile, then tests (~6 min, below)
    python bench/gpu/bench_jax.py --no-tests # benchmark only
    python bench/gpu/bench_jax.py --quick    # small sizes (a smoke run)

Measured, for bf16, fp32 and fp16 at n = 2^28 elements:
  - forward+backward of one activation (y and dx both returned) through jax.nn, the FFI
    path and the pure-JAX path, every activation at every bit width; each path also split
    into its forward and its backward alone, and a copy of the same bytes as a ceiling;
  - an 8-layer MLP training step (1024 wide, batch 16384, bf16 and fp32): step time (one
    step waited for, and per step of 20 dispatched back to back) and XLA's temporary
    memory for jax.nn, pure, ffi and auto;
  - JAX profiler traces, summarised per GPU kernel (--no-profile skips them): a few
    fwd+bwd calls of relu/1 and silu/4 in each --profile-dtypes, and three MLP steps of
    each path for relu and silu in each MLP dtype (kernels a step, their device time, the
    longest ones): where a path's step time goes beyond its bytes.
Timings interleave the paths being compared (rounds x reps, median), so clock drift hits
all of them alike.

Writes to $OUT (or --out): jax_bench.txt (the printed tables), jax_bench.json (every
number), jax_auto_table.json (per backend, dtype, activation and bits: the faster impl and
both ratios; scripts/update_jax_auto_table.py merges it into the committed table) and
jax_profile/ (the perfetto trace).  The JSON files are rewritten after every row, marked
"partial": true until the run ends.

Time on an H200, estimated from bytes moved at ~4 TB/s: a fwd+bwd call moves 4 * n *
itemsize bytes (2.1 GB in bf16, 4.3 GB in fp32 at n = 2^28); 16 cases x 3 dtypes x 7 timed
functions (the split halves move half each) x 27 calls ~ 15 TB, ~4 s at 4 TB/s, ~15 s if
the pure path runs at its slowest recorded 0.26x of jax.nn.  The MLP steps (~2 ms) ~2 s.
So the run is compile-bound: ~430 small jits (fwd+bwd, the halves, the HLO op counts;
~0.3 s each, ~130 s) + 24 MLP steps (~2 s each, ~50 s) + the profile (~15 s): ~3.5 min.
With the tests (~140 s) and the build (~50 s) the device call takes ~6.5 min (limit 10).

Needs libunswag and libunswag_jax_ffi built with CUDA (UNSWAG_LIBRARY /
UNSWAG_JAX_FFI_LIBRARY pointing at a build, or pip install .) and jax with CUDA.
bench/gpu/run_jax.sh builds and runs it in one command.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LINES: list[str] = []

EXACT_CASES = [("relu", 1), ("leaky_relu", 1), ("relu6", 1), ("hardtanh", 1)]
SMOOTH_CASES = [(a, b) for a in ("silu", "gelu", "gelu_tanh") for b in (1, 2, 4, 8)]
CASES = EXACT_CASES + SMOOTH_CASES
DTYPES = ["bfloat16", "float32", "float16"]
MLP_ACTS = ("relu", "silu", "gelu")
TIE_MARGIN = 0.02  # pure must be this much faster to displace ffi (today's rule)


def out(line=""):
    print(line, flush=True)
    LINES.append(line)


def progress(verbose_pytest_output: str) -> str:
    """How far a `pytest -v` run got: 'N passed, N failed; last finished: TEST'."""
    done = re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", verbose_pytest_output,
                      re.M)
    passed = sum(1 for _, r in done if r == "PASSED")
    failed = sum(1 for _, r in done if r in ("FAILED", "ERROR"))
    last = done[-1][0] if done else "(none)"
    return f"{passed} passed, {failed} failed; last finished: {last}"


def run_tests(timeout_s):
    """tests/python/test_jax_*.py on JAX's default backend (the GPU here)."""
    tests = ["test_jax_ops.py", "test_jax_codebooks.py", "test_jax_flax.py", "test_jax_auto.py"]
    # -v: one line per test, so a run cut short still says how far it got and where
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"] + [
        os.path.join(ROOT, "tests", "python", t) for t in tests]
    import unswag
    env = dict(os.environ, UNSWAG_REQUIRE_JAX_FFI="1")  # a missing CUDA handler fails
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(unswag.__file__)))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                      else "")
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                           env=env)
        text = p.stdout + p.stderr
        rc = p.returncode
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        text += f"\n(tests stopped after {timeout_s} s: {progress(text)})"
        rc = -1
    tail = [ln for ln in text.strip().splitlines() if ln.strip()]
    fails = [ln for ln in tail if ln.startswith(("FAILED", "ERROR"))]
    summary = tail[-1] if tail else "(no output)"
    out(f"tests (JAX default backend, {time.time() - t0:.0f} s): {summary}  [rc={rc}]")
    for ln in fails[:30]:
        out("  " + ln)
    return rc == 0


# ---- timing and XLA's view --------------------------------------------------------------

def time_interleaved(fns, args, rounds=5, reps=5, batch=1):
    """Median seconds per call of each fn(*args) (a dict name -> fn), the fns taking turns:
    `rounds` rounds, each timing every fn `reps` times in a rotated order.  A timing
    dispatches `batch` calls back to back and waits once: batch=1 waits for every call;
    a larger batch is what a training loop does, the host's per-call work (XLA's thunks,
    FFI handlers) overlapping the GPU's unless it is the slower of the two."""
    import jax
    for f in fns.values():  # compile + warm up
        jax.block_until_ready(f(*args))
        jax.block_until_ready(f(*args))
    names = list(fns)
    times = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            f = fns[k]
            for _ in range(reps):
                t0 = time.perf_counter()
                jax.block_until_ready([f(*args) for _ in range(batch)])
                times[k].append((time.perf_counter() - t0) / batch)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def time_back_to_back(fns, args, rounds=5, calls=20):
    """time_interleaved with `calls` calls dispatched back to back per timing."""
    return time_interleaved(fns, args, rounds, reps=1, batch=calls)


_OPCODE = re.compile(r"=\s.*?\s([a-z][a-z0-9-]*)\(")


def entry_ops(fn, *args):
    """Opcode counts of the compiled entry computation: copies XLA added around a custom
    call show up here as 'copy' (or 'copy-start')."""
    return entry_ops_of_text(fn.lower(*args).compile().as_text())


def entry_ops_of_text(text):
    counts: dict[str, int] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("ENTRY"):
            inside = True
            continue
        if inside:
            if line.startswith("}"):
                break
            m = _OPCODE.search(line)
            if m and m.group(1) not in ("parameter", "get-tuple-element", "tuple", "bitcast"):
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def backend_key():
    """'cpu', 'cuda', 'rocm' or 'tpu': the names of jax.lax.platform_dependent."""
    import jax
    b = jax.default_backend()
    if b != "gpu":
        return b
    d = jax.devices()[0]
    desc = (getattr(d.client, "platform_version", "") + " " + d.device_kind).lower()
    return "rocm" if ("rocm" in desc or "amd" in desc) else "cuda"


# ---- one activation -----------------------------------------------------------------------

def reference(act):
    import jax
    return {"relu": jax.nn.relu, "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
            "relu6": jax.nn.relu6, "hardtanh": jax.nn.hard_tanh, "silu": jax.nn.silu,
            "gelu": lambda x: jax.nn.gelu(x, approximate=False),
            "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True)}[act]


def _y_dx(f, x, dy):
    import jax
    y, vjp = jax.vjp(f, x)
    return y, vjp(dy)[0]


def op_functions(act, bits, impls):
    """The jitted functions timed for one case: fwd+bwd for jax.nn and each impl, and
    each impl's forward and backward alone."""
    import jax

    import unswag.jax as uj
    ref = reference(act)
    fns = {"jax.nn": jax.jit(lambda x, dy: _y_dx(ref, x, dy))}
    for impl in impls:
        fns[impl] = jax.jit(lambda x, dy, i=impl: _y_dx(
            lambda x: uj.activation(x, act, bits, impl=i), x, dy))
    split = {}
    for impl in impls:
        split[impl + " fwd"] = jax.jit(lambda x, i=impl: uj.forward(x, act, bits, impl=i))
        split[impl + " bwd"] = jax.jit(lambda dy, c, i=impl: uj.backward(dy, c, act, bits,
                                                                         impl=i))
    return fns, split


def bench_ops(n, dtypes, cases, impls, rounds, reps, record):
    """One row per (dtype, case); record(row) after each.  Ratios are jax.nn's time over
    the path's (> 1: faster than jax.nn)."""
    import jax
    import jax.numpy as jnp

    out(f"\nforward+backward under jit, n = {n:,} elements (median of {rounds}x{reps}, "
        "interleaved; y and dx both returned).  x = jax.nn time / path time; GB/s counts x "
        "read, y written, dy read, dx written; fwd/bwd = each path's halves alone, ms")
    hdr = (f"{'op':<13}{'dtype':<9}{'jax.nn':>8}" + "".join(f"{i:>8}{'x':>7}" for i in impls)
           + f"{'chosen':>7}{'best GB/s':>10}{'copy GB/s':>10}"
           + "".join(f"{i + ' f/b':>15}" for i in impls))
    out(hdr)
    out("-" * len(hdr))
    rows = []
    for dt in dtypes:
        x = jax.random.normal(jax.random.PRNGKey(0), (n,), jnp.dtype(dt))
        dy = jax.random.normal(jax.random.PRNGKey(1), (n,), jnp.dtype(dt))
        moved = 4 * n * jnp.dtype(dt).itemsize
        # the same bytes in one fused XLA kernel: the ceiling for fwd+bwd
        t_copy = time_interleaved({"copy": jax.jit(lambda x, dy: (-x, -dy))}, (x, dy),
                                  rounds, reps)["copy"]
        for act, bits in cases:
            fns, split = op_functions(act, bits, impls)
            t = time_interleaved(fns, (x, dy), rounds, reps)
            codes = {i: split[i + " fwd"](x)[1] for i in impls}
            ts = {}
            for i in impls:
                ts.update(time_interleaved({i + " fwd": split[i + " fwd"]}, (x,), rounds, reps))
                ts.update(time_interleaved({i + " bwd": split[i + " bwd"]}, (dy, codes[i]),
                                           rounds, reps))
            del codes
            ratio = {i: t["jax.nn"] / t[i] for i in impls}
            chosen = choose(ratio)
            row = {"dtype": dt, "act": act, "bits": bits, "n": n, "ms": {
                k: v * 1e3 for k, v in {**t, **ts, "copy": t_copy}.items()},
                "x": ratio, "chosen": chosen, "auto_x": ratio[chosen],
                "gbps": {k: moved / t[k] / 1e9 for k in t},
                "copy_gbps": moved / t_copy / 1e9,
                "entry_ops": {i: entry_ops(fns[i], x, dy) for i in impls}}
            rows.append(row)
            record(row)
            best = min(t[i] for i in impls)
            line = f"{act + '/' + str(bits):<13}{dt:<9}{t['jax.nn'] * 1e3:>8.3f}"
            line += "".join(f"{t[i] * 1e3:>8.3f}{ratio[i]:>6.2f}x" for i in impls)
            line += (f"{ratio[chosen]:>6.2f}x{moved / best / 1e9:>10.0f}"
                     f"{moved / t_copy / 1e9:>10.0f}")
            line += "".join(f"{ts[i + ' fwd'] * 1e3:>8.3f}/{ts[i + ' bwd'] * 1e3:<6.3f}"
                            for i in impls)
            out(line)
        del x, dy
    return rows


def choose(ratio):
    """The impl auto should take: pure only if clearly faster than ffi."""
    if "ffi" not in ratio:
        return "pure"
    if "pure" in ratio and ratio["pure"] > ratio["ffi"] * (1 + TIE_MARGIN):
        return "pure"
    return "ffi"


# ---- the MLP training step ----------------------------------------------------------------

def mlp_problem(batch, width, depth, dtype):
    """(params, loss): `depth` random width x width layers, a batch of inputs, and
    loss(params, act) = mean square of the last activations."""
    import jax
    import jax.numpy as jnp
    dt = jnp.dtype(dtype)
    key = jax.random.PRNGKey(0)
    params = []
    for _ in range(depth):
        key, k = jax.random.split(key)
        params.append(jax.random.normal(k, (width, width), dt) / jnp.sqrt(width).astype(dt))
    x = jax.random.normal(key, (batch, width), dt)

    def loss(params, act, x=x):
        h = x
        for w in params:
            h = act(h @ w)
        return jnp.mean(h.astype(jnp.float32) ** 2)
    return params, loss


def mlp_steps(loss, act, bits, impls):
    """{path: jitted gradient of loss} for jax.nn and unswag through each impl."""
    import jax

    import unswag.jax as uj
    b = 1 if act == "relu" else bits
    variants = {"jax.nn": reference(act)}
    for impl in impls:
        variants[impl] = lambda h, i=impl, a=act, b=b: uj.activation(h, a, b, impl=i)
    return {k: jax.jit(jax.grad(lambda p, a=a: loss(p, a))) for k, a in variants.items()}


def bench_mlp(batch, width, depth, dtypes, bits, impls, rounds, reps, record):
    """Step time and XLA's temporary memory of one training step of an MLP, per activation:
    jax.nn and unswag through each impl; record(row) after each activation."""
    rows = []
    for dtype in dtypes:
        params, loss = mlp_problem(batch, width, depth, dtype)
        out(f"\nMLP training step: {depth} layers of {width}x{width}, batch {batch}, {dtype}, "
            f"smooth activations at {bits} bits (temp = XLA's compiled temporary buffers; "
            "x = jax.nn time / step time, mem = temp / jax.nn's; step ms: one step waited for, "
            "b2b ms: 20 steps dispatched back to back, per step)")
        hdr = (f"{'activation':<11}{'path':<8}{'step ms':>9}{'x':>7}{'b2b ms':>9}{'x':>7}"
               f"{'temp MiB':>10}{'mem':>7}")
        out(hdr)
        out("-" * len(hdr))
        for act in MLP_ACTS:
            b = 1 if act == "relu" else bits
            steps = mlp_steps(loss, act, bits, impls)
            mem, ops = {}, {}
            for k, s in steps.items():
                compiled = s.lower(params).compile()
                ops[k] = entry_ops_of_text(compiled.as_text())  # copies around the calls?
                try:
                    ma = compiled.memory_analysis()
                    mem[k] = ma.temp_size_in_bytes if ma is not None else None
                except Exception:
                    mem[k] = None
            t = time_interleaved(steps, (params,), rounds, reps)
            tb = time_back_to_back(steps, (params,), rounds)
            row = {"dtype": dtype, "act": act, "bits": b, "batch": batch, "width": width,
                   "depth": depth, "ms": {k: v * 1e3 for k, v in t.items()},
                   "x": {k: t["jax.nn"] / t[k] for k in impls},
                   "back_to_back_ms": {k: v * 1e3 for k, v in tb.items()},
                   "back_to_back_x": {k: tb["jax.nn"] / tb[k] for k in impls},
                   "temp_mib": {k: (v / 2**20 if v is not None else None) for k, v in mem.items()},
                   "mem": {k: (mem[k] / mem["jax.nn"] if mem[k] and mem["jax.nn"] else None)
                           for k in impls}, "entry_ops": ops}
            rows.append(row)
            record(row)
            for k in steps:
                r = f"{t['jax.nn'] / t[k]:>6.2f}x" if k != "jax.nn" else f"{'':>7}"
                m = (f"{mem[k] / mem['jax.nn']:>6.2f}x" if k != "jax.nn" and mem[k]
                     and mem["jax.nn"] else f"{'':>7}")
                rb = f"{tb['jax.nn'] / tb[k]:>6.2f}x" if k != "jax.nn" else f"{'':>7}"
                out(f"{act + '/' + str(b):<11}{k:<8}{t[k] * 1e3:>9.3f}{r}{tb[k] * 1e3:>9.3f}{rb}"
                    f"{(mem[k] or 0) / 2**20:>10.1f}{m}")
        del params, loss
    return rows


# ---- profile -------------------------------------------------------------------------------

def traced(calls, log_dir, keep_trace=True, top=30):
    """Runs each of `calls` (functions of no argument) under a JAX profiler trace written to
    log_dir; returns the summarize_trace() rows of that trace."""
    import glob
    import shutil

    import jax
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
        for call in calls:
            jax.block_until_ready(call())
    for p in glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True):
        os.remove(p)  # tens of MB; the perfetto trace has the same events
    traces = sorted(glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"),
                              recursive=True))
    rows = summarize_trace(traces[-1], top=top) if traces else []
    if not keep_trace:
        shutil.rmtree(log_dir, ignore_errors=True)
    return rows


def profile(n, dtype, cases, impls, log_dir, calls=3):
    """A JAX profiler trace of `calls` calls of each case's fwd+bwd through jax.nn and each
    impl; returns the per-kernel summary of summarize_trace()."""
    import jax
    import jax.numpy as jnp
    x = jax.random.normal(jax.random.PRNGKey(0), (n,), jnp.dtype(dtype))
    dy = jax.random.normal(jax.random.PRNGKey(1), (n,), jnp.dtype(dtype))
    todo = []
    for act, bits in cases:
        f, _ = op_functions(act, bits, impls)
        for fn in f.values():
            jax.block_until_ready(fn(x, dy))  # compiled outside the trace
            todo += [lambda fn=fn: fn(x, dy)] * calls
    return traced(todo, log_dir)


def profile_mlp(batch, width, depth, dtype, acts, bits, impls, log_dir, steps=3):
    """Where an MLP step's device time goes, per activation and path: one trace of `steps`
    steps each.  Returns rows {act, path, kernels (per step), device_ms (kernel time per
    step), top: [(kernel, mean us, calls per step)]}; kernels that run back to back on one
    stream, so wall time - device time is the gaps between them."""
    import jax
    params, loss = mlp_problem(batch, width, depth, dtype)
    rows = []
    for act in acts:
        for path, step in mlp_steps(loss, act, bits, impls).items():
            jax.block_until_ready(step(params))  # compiled outside the trace
            name = f"mlp-{dtype}-{act}-{path}".replace(".", "")
            ev = traced([lambda s=step: s(params)] * steps, os.path.join(log_dir, name),
                        keep_trace=False, top=10_000)
            dev = [r for r in ev if "/device" in r[0].lower() or "gpu" in r[0].lower()]
            rows.append({"dtype": dtype, "act": act, "path": path,
                         "kernels": sum(r[2] for r in dev) / steps,
                         "device_ms": sum(r[3] for r in dev) / steps / 1e3,
                         "top": [(r[1][:80], round(r[4], 1), r[2] / steps) for r in dev[:6]]})
    return rows


HOST_EVENTS = re.compile(r"ffi|custom|unswag|thunk|execute", re.IGNORECASE)


def summarize_trace(path, top=30, top_host=10):
    """[(process, event name, count, total us, mean us)] of a perfetto trace's complete
    events, longest first: the `top` of the device processes (the kernels), then the
    `top_host` host events that name the custom call or the executable (the handler's CPU
    time).  Without a device process, the `top` of all events."""
    import gzip
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    procs = {e["pid"]: e.get("args", {}).get("name", str(e["pid"])) for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    device = {p for p, name in procs.items()
              if any(w in name.lower() for w in ("gpu", "cuda", "/device"))}
    agg: dict[tuple, list] = {}
    for e in events:
        if e.get("ph") != "X":
            continue
        k = (procs.get(e.get("pid"), "?"), e.get("name", "?"))
        a = agg.setdefault(k, [0, 0.0, e.get("pid") in device])
        a[0] += 1
        a[1] += float(e.get("dur", 0.0))
    rows = sorted(((p, nm, c, tot, tot / c, dev) for (p, nm), (c, tot, dev) in agg.items()),
                  key=lambda r: -r[3])
    if not device:
        return [r[:5] for r in rows[:top]]
    dev_rows = [r[:5] for r in rows if r[5]][:top]
    host_rows = [r[:5] for r in rows if not r[5] and HOST_EVENTS.search(r[1])][:top_host]
    return dev_rows + host_rows


# ---- output ----------------------------------------------------------------------------------

class Results:
    """jax_bench.json and jax_auto_table.json under out_dir, rewritten after every row."""

    def __init__(self, out_dir, run):
        self.dir = out_dir
        self.data = {"run": run, "partial": True, "ops": [], "mlp": [], "profile": [],
                     "mlp_profile": []}

    def add(self, kind, row):
        self.data[kind].append(row)
        self.write()

    def auto_table(self):
        from unswag.jax import _auto
        backend = self.data["run"]["backend"]
        entries = []
        if backend in _auto.BACKENDS:
            for r in self.data["ops"]:
                if {"ffi", "pure"} <= set(r["x"]):
                    entries.append({"backend": backend, "dtype": r["dtype"], "act": r["act"],
                                    "bits": r["bits"], "impl": r["chosen"],
                                    "ffi_x": round(r["x"]["ffi"], 3),
                                    "pure_x": round(r["x"]["pure"], 3), "n": r["n"]})
        return {"format": _auto.FORMAT, "run": self.data["run"], "partial": self.data["partial"],
                "entries": entries}

    def write(self):
        if not self.dir:
            return
        os.makedirs(self.dir, exist_ok=True)
        for name, obj in (("jax_bench.json", self.data), ("jax_auto_table.json",
                                                         self.auto_table())):
            tmp = os.path.join(self.dir, name + ".tmp")
            with open(tmp, "w") as f:
                json.dump(obj, f, indent=1)
            os.replace(tmp, os.path.join(self.dir, name))
        with open(os.path.join(self.dir, "jax_bench.txt"), "w") as f:
            f.write("\n".join(LINES) + "\n")


def done_when(res):
    """Issue 13's criteria, for the path auto would take (the faster one)."""
    out("\nissue 13 'done when' (auto = the faster path of this run):")
    for r in res.data["ops"]:
        if r["act"] not in ("relu", "silu", "gelu") or r["dtype"] not in ("bfloat16", "float32"):
            continue
        need = 1.3 if (r["act"] == "gelu" and r["bits"] in (2, 4)) else 1.0
        ok = r["auto_x"] >= need
        out(f"  op  {r['act']}/{r['bits']:<2}{r['dtype']:<9} auto {r['auto_x']:.2f}x "
            f"({r['chosen']}) >= {need}: {'ok' if ok else 'NOT MET'}")
    for r in res.data["mlp"]:
        best = max(r["x"], key=lambda k: r["x"][k])
        mem = r["mem"].get(best)
        ok = r["x"][best] >= 1.0 and mem is not None and mem <= 0.75
        b2b = r.get("back_to_back_x", {}).get(best)
        b2b_text = "" if b2b is None else f" ({b2b:.2f}x back to back)"
        out(f"  mlp {r['act']}/{r['bits']:<2}{r['dtype']:<9} best {best} {r['x'][best]:.2f}x "
            f"time{b2b_text}, {mem if mem is None else round(mem, 2)}x memory: "
            f"{'ok' if ok else 'NOT MET'}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    ap.add_argument("--test-timeout", type=int, default=180)
    ap.add_argument("--n", type=int, default=None, help="elements (default 2^28)")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--cases", default=None, help="act/bits,... (default: all)")
    ap.add_argument("--mlp", default=None, help="batch,width,depth (default 16384,1024,8)")
    ap.add_argument("--mlp-dtypes", default="bfloat16,float32")
    ap.add_argument("--mlp-bits", type=int, default=4)
    ap.add_argument("--profile-dtypes", default="bfloat16,float32",
                    help="dtypes of the per-kernel op profile")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=os.environ.get("OUT"))
    args = ap.parse_args(argv)

    try:  # an installed unswag, else the source tree (UNSWAG_LIBRARY -> a build)
        import unswag  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(ROOT, "python"))
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    import unswag.jax as uj
    from unswag import _native

    LINES.clear()
    out("unswag.jax benchmark")
    out(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
    st = uj.ffi_status()
    out(f"libunswag {_native.version() if _native.available() else 'NOT LOADED'}, "
        f"cuda built: {_native.cuda_built() if _native.available() else False}; "
        f"FFI handlers: cpu={st['cpu']} cuda={st['cuda']} ({st['library']})"
        + (f"; error: {st['error']}" if st["error"] else ""))
    backend = backend_key()
    run = {"backend": backend, "device": jax.devices()[0].device_kind, "jax": jax.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    res = Results(args.out, run)
    t0 = time.time()

    has_ffi = st["cuda"] if backend == "cuda" else (st["cpu"] if backend == "cpu" else False)
    impls = ["pure"] + (["ffi"] if has_ffi else [])
    n = args.n or ((1 << 20) if args.quick else (1 << 28))  # 2^28: launch costs hidden
    cases = CASES if not args.cases else [
        (c.split("/")[0], int(c.split("/")[1])) for c in args.cases.split(",")]
    dtypes = args.dtypes.split(",")
    run["n"] = n
    bench_ops(n, dtypes, cases, impls, args.rounds, args.reps, lambda r: res.add("ops", r))
    batch, width, depth = ((256, 256, 8) if args.quick else (16384, 1024, 8)) if not args.mlp \
        else tuple(int(v) for v in args.mlp.split(","))
    bench_mlp(batch, width, depth, args.mlp_dtypes.split(","), args.mlp_bits,
              impls + ["auto"], args.rounds, args.reps, lambda r: res.add("mlp", r))
    if not args.no_profile and args.out:
        log_dir = os.path.join(args.out, "jax_profile")
        for dtype in args.profile_dtypes.split(","):
            try:
                rows = profile(n, dtype, [c for c in (("relu", 1), ("silu", 4)) if c in cases]
                               or cases[:1], impls, os.path.join(log_dir, dtype))
                out(f"\nprofile ({dtype}, 3 calls each of jax.nn / {' / '.join(impls)} "
                    "fwd+bwd; events of the GPU trace, longest first):")
                out(f"{'calls':>6}{'total us':>11}{'mean us':>10}  event")
                for p, name, c, tot, mean in rows:
                    out(f"{c:>6}{tot:>11.1f}{mean:>10.1f}  {name[:110]}  [{p}]")
                res.data["profile"] += [[dtype] + list(r) for r in rows]
            except Exception as e:  # the profiler is a bonus: never lose the tables for it
                out(f"\nprofile failed: {type(e).__name__}: {e}")
        for dtype in args.mlp_dtypes.split(","):
            try:
                rows = profile_mlp(batch, width, depth, dtype, ("relu", "silu"), args.mlp_bits,
                                   impls, log_dir)
            except Exception as e:
                out(f"\nMLP profile failed: {type(e).__name__}: {e}")
                continue
            out(f"\nMLP step profile ({dtype}, 3 steps a path; kernels and device ms per step "
                "= the kernels' own time; top kernels: mean us x calls per step):")
            if not any(r["kernels"] for r in rows):
                out("(no device events in the trace: nothing to attribute on this backend)")
            for r in rows:
                top = "; ".join(f"{k} {us:.1f}us x{c:g}" for k, us, c in r["top"])
                out(f"{r['act']:<6}{r['path']:<8}{r['kernels']:>6.0f} kernels"
                    f"{r['device_ms']:>9.3f} ms  {top[:300]}")
            res.data["mlp_profile"] += rows
    done_when(res)
    res.data["partial"] = False
    res.write()
    ok = True
    if not args.no_tests:  # last: a run cut short by the device's limit keeps the tables
        out()
        ok = run_tests(args.test_timeout)
    out(f"\ntotal {time.time() - t0:.0f} s")
    res.write()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

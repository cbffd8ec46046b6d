#!/usr/bin/env python3
"""unswag.jax on the GPU: tests, then forward+backward timings and the peak
memory of a small MLP training step, against jax.nn in the same run.

    python bench/gpu/bench_jax.py            # tests + benchmark (~2-3 minutes)
    python bench/gpu/bench_jax.py --no-tests # benchmark only
    python bench/gpu/bench_jax.py --quick    # smaller sizes

Prints a table; with OUT set, also writes it to $OUT/jax_bench.txt.
Needs libunswag and libunswag_jax_ffi built with CUDA (pip install . with
jax and nvcc present, or UNSWAG_LIBRARY / UNSWAG_JAX_FFI_LIBRARY pointing at
a build), and jax with CUDA.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LINES: list[str] = []


def out(line=""):
    print(line, flush=True)
    LINES.append(line)


def run_tests(timeout_s):
    """tests/python/test_jax_*.py on JAX's default backend (the GPU here)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           os.path.join(ROOT, "tests", "python", "test_jax_ops.py"),
           os.path.join(ROOT, "tests", "python", "test_jax_codebooks.py"),
           os.path.join(ROOT, "tests", "python", "test_jax_flax.py")]
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
        text += f"\n(tests stopped after {timeout_s} s)"
        rc = -1
    tail = [ln for ln in text.strip().splitlines() if ln.strip()]
    fails = [ln for ln in tail if ln.startswith(("FAILED", "ERROR"))]
    summary = tail[-1] if tail else "(no output)"
    out(f"tests (JAX default backend, {time.time() - t0:.0f} s): {summary}  [rc={rc}]")
    for ln in fails[:30]:
        out("  " + ln)
    return rc == 0


def timeit(f, *args, reps=20):
    import jax
    r = f(*args)
    jax.block_until_ready(r)  # compile + warm up
    jax.block_until_ready(f(*args))
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        t.append(time.perf_counter() - t0)
    t.sort()
    return t[len(t) // 2]


def _y_dx(f, x, dy):
    import jax
    y, vjp = jax.vjp(f, x)
    return y, vjp(dy)[0]


def bench_ops(n, dtypes, impls):
    import jax
    import jax.numpy as jnp

    import unswag.jax as uj

    ref = {"relu": jax.nn.relu, "silu": jax.nn.silu,
           "gelu": lambda x: jax.nn.gelu(x, approximate=False),
           "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True)}
    cases = [("relu", 1), ("silu", 4), ("silu", 8), ("gelu", 4), ("gelu_tanh", 4)]
    out(f"\nforward+backward under jit, n = {n:,} elements (median of 20; y and dx both "
        "returned; GB/s counts x read, y written, dy read, dx written)")
    hdr = f"{'op':<14}{'dtype':<10}{'jax.nn ms':>10}" + "".join(
        f"{impl + ' ms':>11}{'x':>7}" for impl in impls) + f"{'GB/s best':>11}"
    out(hdr)
    out("-" * len(hdr))
    for dt in dtypes:
        x = jax.random.normal(jax.random.PRNGKey(0), (n,), jnp.dtype(dt))
        dy = jax.random.normal(jax.random.PRNGKey(1), (n,), jnp.dtype(dt))
        for act, bits in cases:
            # y and dx both returned: a training step uses y, and without it XLA would
            # drop jax.nn's forward entirely (ours cannot be split from its codes)
            f_ref = jax.jit(lambda x, dy, f=ref[act]: _y_dx(f, x, dy))
            t_ref = timeit(f_ref, x, dy)
            row = f"{act + '/' + str(bits):<14}{dt:<10}{t_ref * 1e3:>10.3f}"
            best = None
            for impl in impls:
                f = jax.jit(lambda x, dy, a=act, b=bits, i=impl: _y_dx(
                    lambda x: uj.activation(x, a, b, impl=i), x, dy))
                t = timeit(f, x, dy)
                best = t if best is None else min(best, t)
                row += f"{t * 1e3:>11.3f}{t_ref / t:>6.2f}x"
            moved = 4 * n * jnp.dtype(dt).itemsize
            row += f"{moved / best / 1e9:>11.1f}"
            out(row)


def bench_mlp(batch, width, depth, dtype):
    """Peak device memory and time of one training step of an MLP."""
    import jax
    import jax.numpy as jnp

    import unswag.jax as uj

    dt = jnp.dtype(dtype)
    key = jax.random.PRNGKey(0)
    params = []
    for _ in range(depth):
        key, k = jax.random.split(key)
        params.append(jax.random.normal(k, (width, width), dt) / jnp.sqrt(width).astype(dt))
    x = jax.random.normal(key, (batch, width), dt)

    def loss(params, act):
        h = x
        for w in params:
            h = act(h @ w)
        return jnp.mean(h.astype(jnp.float32) ** 2)

    acts = {"jax.nn.relu": jax.nn.relu, "unswag relu": uj.relu,
            "jax.nn.silu": jax.nn.silu, "unswag silu/4": lambda h: uj.silu(h, 4),
            "jax.nn.gelu": lambda h: jax.nn.gelu(h, approximate=False),
            "unswag gelu/4": lambda h: uj.gelu(h, 4)}
    out(f"\nMLP training step: {depth} layers of {width}x{width}, batch {batch}, {dtype} "
        "(peak = XLA's compiled temp buffers; activations kept for backward dominate)")
    hdr = f"{'activation':<16}{'step ms':>10}{'temp MiB':>11}{'vs jax.nn':>11}"
    out(hdr)
    out("-" * len(hdr))
    base = None
    for name, act in acts.items():
        step = jax.jit(jax.grad(lambda p, a=act: loss(p, a)))
        compiled = step.lower(params).compile()
        mem = None
        try:
            ma = compiled.memory_analysis()
            mem = ma.temp_size_in_bytes if ma is not None else None
        except Exception:
            mem = None
        t = timeit(step, params, reps=10)
        if name.startswith("jax.nn"):
            base = mem
        ratio = (f"{mem / base:>10.2f}x" if (mem and base and not name.startswith("jax.nn"))
                 else f"{'':>11}")
        out(f"{name:<16}{t * 1e3:>10.2f}{(mem or 0) / 2**20:>11.1f}{ratio}")
    try:
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            out(f"(process peak_bytes_in_use on device 0: {stats['peak_bytes_in_use'] / 2**20:.0f}"
                " MiB)")
    except Exception:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--test-timeout", type=int, default=150)
    args = ap.parse_args()

    try:  # an installed unswag, else the source tree (UNSWAG_LIBRARY -> a build)
        import unswag  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(ROOT, "python"))
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    import unswag.jax as uj
    from unswag import _native

    out("unswag.jax GPU benchmark")
    out(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
    st = uj.ffi_status()
    out(f"libunswag {_native.version() if _native.available() else 'NOT LOADED'}, "
        f"cuda built: {_native.cuda_built() if _native.available() else False}; "
        f"FFI handlers: cpu={st['cpu']} cuda={st['cuda']} ({st['library']})"
        + (f"; error: {st['error']}" if st["error"] else ""))
    t0 = time.time()
    ok = True
    if not args.no_tests:
        ok = run_tests(args.test_timeout)

    impls = ["pure"] + (["ffi"] if st["cuda"] or jax.default_backend() == "cpu" else [])
    n = (1 << 20) if args.quick else (1 << 28)  # 2^28: long enough to hide launch costs
    bench_ops(n, ["bfloat16", "float32"], impls)
    bench_mlp(batch=256 if args.quick else 16384, width=1024 if not args.quick else 256,
              depth=8, dtype="bfloat16")
    out(f"\ntotal {time.time() - t0:.0f} s")

    d = os.environ.get("OUT")
    if d:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "jax_bench.txt"), "w") as f:
            f.write("\n".join(LINES) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""impl="auto" follows the measured table (python/unswag/jax/_auto.py): per backend, dtype,
activation and bits it lowers to the path the table names, with the same code bytes and
gradients as that path forced; without an entry it keeps the old rule (the FFI handlers
where registered).  Runs on JAX's default backend (CPU in CI, CUDA in bench_jax.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp

import unswag.jax as uj
from unswag.jax import _auto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND = {"cpu": "cpu", "gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
_ST = uj.ffi_status()
HAVE_FFI = _ST["cpu"] if BACKEND == "cpu" else (_ST["cuda"] if BACKEND == "cuda" else False)
need_ffi = pytest.mark.skipif(not HAVE_FFI, reason=f"FFI handlers not available on {BACKEND}")
CASES = [("relu", 1), ("leaky_relu", 1), ("silu", 2), ("silu", 4), ("gelu", 8),
         ("gelu_tanh", 1)]


def _table(*entries):
    return {"format": _auto.FORMAT, "entries": [
        {"backend": b, "dtype": d, "act": a, "bits": k, "impl": i} for b, d, a, k, i in entries]}


@pytest.fixture
def use_table(tmp_path, monkeypatch):
    """use_table(table): impl='auto' reads this table until the test ends."""
    def set_table(table):
        p = tmp_path / "auto_table.json"
        p.write_text(json.dumps(table))
        monkeypatch.setenv(_auto.ENV, str(p))
        _auto.clear_cache()
    yield set_table
    _auto.clear_cache()


def _uses_ffi(f, *args):
    text = jax.jit(f).lower(*args).compile().as_text()
    fwd = 'custom_call_target="unswag_jax_forward"' in text
    bwd = 'custom_call_target="unswag_jax_backward"' in text
    return fwd or bwd


def _x(dtype):
    rng = np.random.default_rng(5)
    return jnp.asarray(rng.standard_normal((3, 37, 5)).astype(np.float32) * 3, dtype)


def _loss(act, bits, impl):
    def f(x):
        y = uj.activation(x, act, bits, impl=impl)
        return (y.astype(jnp.float32) * jnp.sin(jnp.arange(y.size).reshape(y.shape))).sum()
    return f


# ---- the table itself -------------------------------------------------------------------------

def test_committed_table_is_valid():
    with open(_auto.DEFAULT_PATH) as f:
        table = json.load(f)
    _auto.validate(table)
    assert table["format"] == _auto.FORMAT


@pytest.mark.parametrize("bad,match", [
    ({"format": "x", "entries": []}, "not a"),
    ({"format": _auto.FORMAT}, "entries"),
    (_table(("tpu", "float32", "relu", 1, "ffi")), "backend"),
    (_table(("cuda", "float64", "relu", 1, "ffi")), "dtype"),
    (_table(("cuda", "float32", "swish", 1, "ffi")), "activation"),
    (_table(("cuda", "float32", "silu", 3, "ffi")), "bits"),
    (_table(("cuda", "float32", "silu", 2, "triton")), "impl"),
    (_table(("cuda", "float32", "silu", 2, "ffi"), ("cuda", "float32", "silu", 2, "pure")),
     "twice"),
    ({"format": _auto.FORMAT, "entries": [{"backend": "cuda"}]}, "lacks"),
])
def test_validate_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        _auto.validate(bad)


def test_merge_replaces_same_key_keeps_others(tmp_path):
    table = _table(("cuda", "float32", "relu", 1, "ffi"), ("cpu", "bfloat16", "silu", 4, "ffi"))
    measured = _table(("cuda", "float32", "relu", 1, "pure"), ("cuda", "float16", "gelu", 2,
                                                                "ffi"))
    measured["run"] = {"device": "NVIDIA H200", "date": "today"}
    merged = _auto.merge(table, measured)
    assert _auto.validate(merged) == {("cpu", "bfloat16", "silu", 4): "ffi",
                                      ("cuda", "float16", "gelu", 2): "ffi",
                                      ("cuda", "float32", "relu", 1): "pure"}
    assert merged["measured"] == [{"device": "NVIDIA H200", "date": "today"}]
    assert len(table["entries"]) == 2  # inputs untouched
    with pytest.raises(ValueError, match="partial"):
        _auto.merge(table, dict(measured, partial=True))
    # the script writes what merge returns, one entry a line, and it loads back
    src, dst = tmp_path / "m.json", tmp_path / "t.json"
    src.write_text(json.dumps(measured))
    dst.write_text(_auto.dumps(table))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts",
                                                     "update_jax_auto_table.py"),
                        str(src), "--table", str(dst)], capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr
    assert _auto.load(str(dst)) == _auto.validate(merged)
    assert dst.read_text().count('"backend"') == 3


# ---- auto follows it ----------------------------------------------------------------------------

@need_ffi
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("act,bits", CASES, ids=[f"{a}-{b}" for a, b in CASES])
@pytest.mark.parametrize("choice", ["ffi", "pure"])
def test_auto_takes_the_tables_path(choice, act, bits, dtype, use_table):
    """Lowered to the path the entry names, and the same codes and gradients as that path
    and as the other path (codes are byte-identical across paths)."""
    use_table(_table((BACKEND, dtype, act, bits, choice)))
    x = _x(dtype)
    fwd = lambda x: uj.forward(x, act, bits, impl="auto")
    assert _uses_ffi(fwd, x) == (choice == "ffi")
    assert _uses_ffi(jax.grad(_loss(act, bits, "auto")), x) == (choice == "ffi")
    _, c_auto = jax.jit(fwd)(x)
    g_auto = jax.jit(jax.grad(_loss(act, bits, "auto")))(x)
    for impl in ("ffi", "pure"):
        _, c = jax.jit(lambda x, i=impl: uj.forward(x, act, bits, impl=i))(x)
        np.testing.assert_array_equal(np.asarray(c_auto), np.asarray(c))
        g = jax.jit(jax.grad(_loss(act, bits, impl)))(x)
        np.testing.assert_array_equal(np.asarray(g_auto).view(np.uint8),
                                      np.asarray(g).view(np.uint8))


@need_ffi
def test_auto_entry_is_per_dtype_and_bits(use_table):
    use_table(_table((BACKEND, "float32", "silu", 4, "pure")))
    f = lambda bits: (lambda x: uj.forward(x, "silu", bits, impl="auto"))
    assert not _uses_ffi(f(4), _x("float32"))
    assert _uses_ffi(f(4), _x("bfloat16"))  # no entry: the old rule
    assert _uses_ffi(f(2), _x("float32"))


@need_ffi
def test_auto_without_entry_keeps_ffi(use_table):
    use_table(_table())
    assert _uses_ffi(lambda x: uj.forward(x, "gelu", 4, impl="auto"), _x("float32"))


def test_explicit_impl_ignores_table(use_table):
    use_table(_table((BACKEND if BACKEND in _auto.BACKENDS else "cpu", "float32", "relu", 1,
                      "ffi")))
    assert not _uses_ffi(lambda x: uj.forward(x, "relu", 1, impl="pure"), _x("float32"))

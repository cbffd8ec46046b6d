"""bench/gpu/bench_jax.py on the CPU with tiny sizes, so that a change of the package or of
jax that breaks it fails here, not after a device machine has been started.  Nothing is
measured: the checks are on the shape of its tables and files, and on its decision file
going through scripts/update_jax_auto_table.py into a table impl="auto" follows."""
import importlib.util
import json
import os

import pytest

import conftest as C

jax = pytest.importorskip("jax")

import unswag.jax as uj
from unswag.jax import _auto

ROOT = C.ROOT
HAVE_FFI = jax.default_backend() == "cpu" and uj.ffi_status()["cpu"]


@pytest.fixture
def restore_table():
    yield
    _auto.clear_cache()


def test_bench_jax_tiny_run(tmp_path, capsys, monkeypatch, restore_table):
    bench = C.load_bench("bench_jax")
    rc = bench.main(["--no-tests", "--n", "1000", "--cases", "relu/1,silu/4",
                     "--dtypes", "bfloat16,float32", "--mlp", "16,8,2", "--mlp-dtypes",
                     "float32", "--rounds", "1", "--reps", "1", "--out", str(tmp_path)])
    assert rc == 0
    impls = ["pure"] + (["ffi"] if HAVE_FFI else [])
    with open(tmp_path / "jax_bench.json") as f:
        res = json.load(f)
    assert not res["partial"] and res["run"]["backend"] == "cpu"
    assert [(r["dtype"], r["act"], r["bits"]) for r in res["ops"]] == [
        ("bfloat16", "relu", 1), ("bfloat16", "silu", 4), ("float32", "relu", 1),
        ("float32", "silu", 4)]
    for r in res["ops"]:
        assert sorted(r["x"]) == sorted(impls) and r["chosen"] in impls
        assert {"jax.nn", "copy"} | {i + s for i in impls for s in ("", " fwd", " bwd")} \
            == set(r["ms"])
        assert all(v > 0 for v in r["ms"].values())
        if HAVE_FFI:  # XLA's entry computation holds the two custom calls
            assert r["entry_ops"]["ffi"].get("custom-call") == 2
    assert [r["act"] for r in res["mlp"]] == ["relu", "silu", "gelu"]
    for r in res["mlp"]:
        assert set(r["x"]) == set(impls) | {"auto"} and r["ms"]["jax.nn"] > 0
        assert set(r["back_to_back_x"]) == set(r["x"])  # steps dispatched back to back
        assert all(v > 0 for v in r["back_to_back_ms"].values())
        if HAVE_FFI:  # 2 layers: a forward and a backward custom call each
            assert r["entry_ops"]["ffi"].get("custom-call") == 4
            assert "custom-call" not in r["entry_ops"]["pure"]
    text = (tmp_path / "jax_bench.txt").read_text()
    assert "forward+backward under jit" in text and "MLP training step" in text
    assert "issue 13 'done when'" in capsys.readouterr().out
    assert "profile" in text  # a summary, or why it failed
    assert "MLP step profile (float32" in text  # the per-path trace of MLP steps
    assert {(r["act"], r["path"]) for r in res["mlp_profile"]} == {
        (a, p) for a in ("relu", "silu") for p in ["jax.nn"] + impls}

    # the decision file: valid, one entry per measured case where both paths ran, and
    # it goes into a table that auto then follows
    with open(tmp_path / "jax_auto_table.json") as f:
        measured = json.load(f)
    entries = _auto.validate(measured)
    if not HAVE_FFI:
        assert entries == {}
        return
    assert set(entries) == {("cpu", d, a, b) for d in ("bfloat16", "float32")
                            for a, b in (("relu", 1), ("silu", 4))}
    chosen = {("cpu", r["dtype"], r["act"], r["bits"]): r["chosen"] for r in res["ops"]}
    assert entries == chosen
    table = tmp_path / "table.json"
    with open(_auto.DEFAULT_PATH) as f:
        table.write_text(_auto.dumps(json.load(f)))
    upd = _load_script()
    assert upd.main([str(tmp_path / "jax_auto_table.json"), "--table", str(table)]) == 0
    monkeypatch.setenv(_auto.ENV, str(table))
    _auto.clear_cache()
    assert _auto.choose("cpu", "float32", "silu", 4) == entries[("cpu", "float32", "silu", 4)]


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "update_jax_auto_table", os.path.join(ROOT, "scripts", "update_jax_auto_table.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_choose_prefers_ffi_on_ties():
    bench = C.load_bench("bench_jax")
    assert bench.choose({"ffi": 1.0, "pure": 1.01}) == "ffi"
    assert bench.choose({"ffi": 1.0, "pure": 1.1}) == "pure"
    assert bench.choose({"pure": 0.5}) == "pure"


def test_summarize_trace_prefers_gpu_events(tmp_path):
    import gzip
    events = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
              {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}},
              {"ph": "X", "pid": 1, "name": "host thing", "dur": 500.0},
              {"ph": "X", "pid": 1, "name": "ffi_call.4", "dur": 7.0},
              {"ph": "X", "pid": 2, "name": "unswag_fwd_kernel", "dur": 300.0},
              {"ph": "X", "pid": 2, "name": "unswag_fwd_kernel", "dur": 100.0},
              {"ph": "X", "pid": 2, "name": "loop_fusion", "dur": 250.0}]
    p = tmp_path / "t.json.gz"
    with gzip.open(p, "wt") as f:
        json.dump({"traceEvents": events}, f)
    rows = C.load_bench("bench_jax").summarize_trace(str(p))
    assert rows == [("/device:GPU:0", "unswag_fwd_kernel", 2, 400.0, 200.0),
                    ("/device:GPU:0", "loop_fusion", 1, 250.0, 250.0),
                    ("/host:CPU", "ffi_call.4", 1, 7.0, 7.0)]


def test_entry_ops_counts_the_entry_computation():
    import jax.numpy as jnp
    bench = C.load_bench("bench_jax")
    f = jax.jit(lambda x: (jnp.sin(x) * 2, x.T.copy()))
    ops = bench.entry_ops(f, jnp.ones((4, 3)))
    assert "parameter" not in ops and sum(ops.values()) >= 1


def test_progress_of_a_cut_short_test_run():
    bench = C.load_bench("bench_jax")
    text = ("tests/python/test_jax_ops.py::test_a[relu-1] PASSED     [  1%]\n"
            "tests/python/test_jax_ops.py::test_b FAILED            [  2%]\n"
            "tests/python/test_jax_ops.py::test_c[x] SKIPPED (no) [  3%]\n"
            "tests/python/test_jax_ops.py::test_d PASSED            [  4%]\n")
    assert bench.progress(text) == ("2 passed, 1 failed; last finished: "
                                    "tests/python/test_jax_ops.py::test_d")
    assert bench.progress("") == "0 passed, 0 failed; last finished: (none)"

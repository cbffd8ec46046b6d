"""The GPU benchmark scripts, run on the CPU with a tiny model and a faked CUDA memory API,
so that a script broken by a change of the package or of transformers fails here, not after
a device machine has been started.  Nothing is measured."""
import json
import os
import types

import pytest

import conftest as C

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = C.ROOT


@pytest.fixture
def fake_cuda(monkeypatch):
    cu = torch.cuda
    monkeypatch.setattr(cu, "get_device_properties",
                        lambda i: types.SimpleNamespace(total_memory=140 * 2 ** 30))
    for name in ("set_per_process_memory_fraction", "synchronize", "reset_peak_memory_stats",
                 "empty_cache"):
        monkeypatch.setattr(cu, name, lambda *a, **k: None)
    monkeypatch.setattr(cu, "max_memory_allocated", lambda *a, **k: 3 * 2 ** 30)


@pytest.mark.parametrize("mode", ["unpatched", "fused", "recompute", "recompute+loss"])
def test_llama_memory_child(mode, fake_cuda, monkeypatch, capsys):
    import transformers as T
    bench = C.load_bench("bench_llama_memory")
    real = T.LlamaConfig

    def tiny(**kw):
        kw.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
        return real(**kw)

    monkeypatch.setattr(T, "LlamaConfig", tiny)
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    bench.child(mode, mode.endswith("loss"), [16, 32], tile=8)
    rows = [json.loads(ln[7:]) for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("RESULT ")]
    assert [r["ctx"] for r in rows] == [16, 32] and all(r["status"] == "ok" for r in rows)
    assert (rows[0]["patched"] is None) == (mode == "unpatched")


def test_models_memory_child_bisects(fake_cuda, monkeypatch):
    bench = C.load_bench("bench_models_memory")

    def build(name):
        m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))

        def batch(b):
            if b > 40:
                raise torch.cuda.OutOfMemoryError("fake")
            x = torch.randn(b, 8)
            return lambda: m(x).square().mean()
        return m.train(), batch

    monkeypatch.setattr(bench, "_build", build)
    out = bench.child("tiny", "unswag", 2, 16)
    # doubling reaches 32, 64 fails, bisection settles within a quarter of 32
    assert out["status"] == "ok" and out["largest"]["batch"] == 40
    assert out["at_fixed"]["batch"] == 16


@pytest.mark.parametrize("mode", ["hf+ckpt", "unswag-prev+ckpt", "unswag-long",
                                  "unswag-long+norm"])
def test_long_context_child(mode, monkeypatch, capsys):
    bench = C.load_bench("bench_long_context")
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    bench.child(mode, [16, 32], cap=80, small=True)
    rows = [json.loads(ln[7:]) for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("RESULT ")]
    assert [r["ctx"] for r in rows] == [16, 32] and all(r["status"] == "ok" for r in rows)
    if mode.startswith("unswag-long"):
        assert rows[-1]["host_gib"] > 0


def test_multi_gpu_ranks_on_cpu(tmp_path):
    """bench_multi_gpu.py under torch.distributed.run, 2 processes, gloo, a tiny model: every
    mode's sweep (the sequence-parallel ones too), a (fake) OOM in the middle of a step at 64
    tokens that ends each sweep on both ranks, and the table and JSON it writes."""
    import subprocess
    import sys
    env = dict(os.environ, OMP_NUM_THREADS="1", OUT=str(tmp_path),
               UNSWAG_BENCH_FAKE_OOM_AT="64")
    import unswag  # the children import the same unswag (and native library) as this process
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(unswag.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg] + [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2", os.path.join(ROOT, "bench", "gpu",
                                                              "bench_multi_gpu.py"),
                        "--device", "cpu", "--contexts", "16", "32", "64", "128",
                        "--caps", "16", "--chunk-tokens", "8"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with open(tmp_path / "multi_gpu.json") as f:
        res = json.load(f)["results"]
    bench = C.load_bench("bench_multi_gpu")
    assert sorted(res) == sorted(f"{m}@16" for m in bench.MODES)
    for key, rows in res.items():
        assert [x["ctx"] for x in rows] == [16, 32, 64], key
        assert [x["status"] for x in rows] == ["ok", "ok", "OOM"], key
        gpus = 1 if key.startswith("unswag-long@1gpu") else 2
        assert len(rows[0]["peak_gib"]) == gpus and rows[1]["tokens_per_s"] > 0
        seqs = 1 if "+sp@" in key else gpus  # +sp: both GPUs share one 32-token sequence
        assert abs(rows[1]["tokens_per_s"] * rows[1]["step_s"] - 32 * seqs) < 1e-6, key
        if key.startswith("unswag-long"):
            assert min(rows[1]["host_gib"]) > 0
    assert "unswag-long+fsdp, cap 16 GiB per GPU" in (tmp_path / "multi_gpu.txt").read_text()
    rows = res["unswag-long+fsdp@16"]
    assert rows[2]["oom"].startswith("fake OOM") and rows[2]["where"]


def test_multi_gpu_fake_oom_is_off_by_default(monkeypatch):
    """Unset or "0", the smoke test's fake OOM stays off (a default of "0" once faked an OOM
    at every context of a GPU run)."""
    bench = C.load_bench("bench_multi_gpu")
    monkeypatch.delenv("UNSWAG_BENCH_FAKE_OOM_AT", raising=False)
    assert bench.fake_oom_context() == 0
    monkeypatch.setenv("UNSWAG_BENCH_FAKE_OOM_AT", "0")
    assert bench.fake_oom_context() == 0
    monkeypatch.setenv("UNSWAG_BENCH_FAKE_OOM_AT", "64")
    assert bench.fake_oom_context() == 64


FORTUNES = "/usr/share/games/fortunes"


def test_convergence_reads_fortune_records(tmp_path):
    bench = C.load_bench("bench_convergence")
    (tmp_path / "b").write_bytes(b"second file\n%\n")
    (tmp_path / "a").write_bytes(b"one\ntwo lines\n%\nthree\n%\n")
    (tmp_path / "a.dat").write_bytes(b"\x00\x01index")
    (tmp_path / "a.u8").symlink_to(tmp_path / "a")
    recs = bench.read_records(str(tmp_path))
    assert recs == [b"one\ntwo lines\n", b"three\n", b"second file\n"]
    train, val = bench.split_corpus(recs * 10)  # 30 records: numbers 19 and 39 (none) to val
    assert val == recs[1] and len(train) + len(val) == 10 * sum(map(len, recs))
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes"):
        bench.read_records(str(tmp_path / "missing"))


@pytest.mark.skipif(not os.path.isdir(FORTUNES),
                    reason="the Debian package 'fortunes' is not installed (scripts/test.sh "
                           "installs it)")
def test_convergence_bench_runs_tiny(tmp_path, capsys):
    """Every variant kind end to end on the CPU: 1 layer, 6 steps, 100 kB of the corpus."""
    bench = C.load_bench("bench_convergence")
    res = bench.main(["--corpus", FORTUNES, "--max-bytes", "100000", "--steps", "6",
                      "--eval-every", "3", "--seeds", "2", "--layers", "1", "--hidden", "32",
                      "--heads", "2", "--seq", "32", "--batch", "4", "--val-seqs", "4",
                      "--variants", "exact,2,1c,2r,2s", "--cal-calls", "2", "--recal-every", "3",
                      "--models", "gelu,silu", "--out", str(tmp_path)])
    s = res["summary"]
    assert set(s) == {"gelu", "silu"}
    for act in s:
        assert list(s[act]["variants"]) == ["exact", "2", "1c", "2r", "2s"]
        assert s[act]["noise_floor"]["bitwise_equal"], "two exact runs of one seed differ"
        ex = s[act]["variants"]["exact"]
        assert ex["diff_mean"] == 0 and ex["steps_ratio_mean"] == 1.0 and ex["n"] == 2
    # the surgery reports say which codebook each run used
    assert "calibrated gelu, 1 bit" in res["reports"]["gelu 1c"]
    assert "refitted every 3 training calls" in res["reports"]["silu 2r"]
    assert "built-in silu, 2 bit" in res["reports"]["silu 2"]
    assert "stochastic gelu, 2 bit" in res["reports"]["gelu 2s"]
    assert len(res["runs"]) == 2 * 5 * 2
    with open(tmp_path / "convergence-gelu-silu.json") as f:
        saved = json.load(f)
    assert saved["final"] and saved["summary"]["gelu"]["exact_sd"] == s["gelu"]["exact_sd"]
    assert "noise floor" in (tmp_path / "convergence-gelu-silu.txt").read_text()
    assert saved["nondeterministic_ops"] == []
    assert "minus exact" in capsys.readouterr().out


def test_sweep_run_child_fills_what_the_child_did_not_reach():
    import sys
    sweep = C.load_bench("sweep")
    child = ("import json, sys\n"
             "for c in (16, 32): print('RESULT ' + json.dumps({'ctx': c, 'status': 'ok'}))\n"
             "sys.stderr.write('CUDA out of memory\\n'); sys.exit(1)")
    got, err = sweep.run_child([sys.executable, "-c", child], [16, 32, 64, 128], 60)
    assert [got[c]["status"] for c in (16, 32, 64)] == ["ok", "ok", "OOM"]
    assert got[128]["status"].startswith("skipped") and "out of memory" in err
    got, _ = sweep.run_child([sys.executable, "-c", "import time; time.sleep(30)"], [16], 1)
    assert got[16]["status"] == "timeout 1s"

"""The surgery and the long-context mode in a process group: 2 processes, gloo, CPU.

Runs tests/gpu/test_multi_gpu.py (the 2-GPU check, which takes ``--device cpu``) under
``torch.distributed.run``: DDP and FSDP2 (fully_shard per decoder layer and on the model)
with activation codes (GPT-2), gated="fused", gated="recompute" + lm_loss="chunked" and
the long-context mode (Llama), FSDP2 mixed precision (bf16 parameters, fp32 reduction)
with the long-context mode, state_dict round trips, and the refused FSDP2 layouts: the
loss and every parameter gradient of the 2-process step equal to one process's step on
the same global batch within fp32 noise (bf16 noise for mixed precision).  Also the
long-context mode's sequence parallelism (tests/gpu/multi_gpu_sp.py: one sequence split
over both processes, plain, under FSDP2 and DDP, equal to one process and to unpatched
Hugging Face) and its refusals."""
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if not torch.distributed.is_available():
    pytest.skip("torch without distributed support", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _package_root():
    """Where this process imported unswag from (the installed package in CI, whose native
    library sits beside it), so the child processes import the same one."""
    import unswag
    return os.path.dirname(os.path.dirname(os.path.abspath(unswag.__file__)))


def test_two_processes_equal_one():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([_package_root()] +
                                        [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("OUT", None)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2",
                        os.path.join(ROOT, "tests", "gpu", "test_multi_gpu.py"),
                        "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("PASS", "FAIL"))]
    assert lines and lines[-1].startswith("PASS long-context layouts"), r.stdout + r.stderr[-3000:]
    fails = [ln for ln in lines if ln.startswith("FAIL")]
    assert not fails, "\n".join(fails) + "\n" + r.stderr[-3000:]
    assert r.stdout.splitlines()[-1] == f"{len(lines)} passed, 0 failed"
    assert len(lines) == 17 and r.returncode == 0


def test_multi_gpu_example_runs_on_cpu():
    """examples/long_context_multi_gpu.py (the README's launch command) with --device cpu:
    2 processes share one sequence under FSDP2; each step's loss is finite and the same on
    both ranks."""
    import math
    import re
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([_package_root()] +
                                        [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2",
                        os.path.join(ROOT, "examples", "long_context_multi_gpu.py"),
                        "--device", "cpu", "--tiny", "--tokens", "64", "--steps", "2",
                        "--chunk-tokens", "8"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    got = {}
    # Not anchored to line starts: the two ranks share one pipe.
    for m in re.finditer(r"rank (\d) step (\d): loss ([-\d.naif]+)", r.stdout):
        got[(int(m[1]), int(m[2]))] = float(m[3])
    assert sorted(got) == [(0, 0), (0, 1), (1, 0), (1, 1)], r.stdout
    for step in (0, 1):
        assert math.isfinite(got[(0, step)]) and got[(0, step)] == got[(1, step)]
    assert got[(0, 1)] != got[(0, 0)]  # the optimizer stepped

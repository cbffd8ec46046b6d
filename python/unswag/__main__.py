"""`python -m unswag info`: version, build, devices, and each activation's protocol."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import TextIO


def _cuda_archs(path: str) -> str:
    """CUDA architectures compiled into the library (via cuobjdump, else a byte scan)."""
    tool = shutil.which("cuobjdump")
    if tool:
        try:
            out = subprocess.run([tool, "--list-elf", "--list-ptx", path], capture_output=True,
                                 text=True, timeout=30).stdout
            sms = sorted(set(re.findall(r"sm_(\d+)", out)), key=int)
            if sms:
                return ", ".join(f"sm_{s}" for s in sms)
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        with open(path, "rb") as f:
            data = f.read()
        sms = sorted(set(m.decode() for m in re.findall(rb"\.target sm_(\d+)", data)), key=int)
        if sms:
            return "PTX for " + ", ".join(f"sm_{s}" for s in sms) + \
                " (install cuobjdump to list the compiled cubins)"
    except OSError:
        pass
    return "unknown (cuobjdump not found)"


def _devices() -> list:
    lines = ["cpu"]
    try:
        import torch
        lines[0] = f"cpu (torch {torch.__version__}, {torch.get_num_threads()} threads)"
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                lines.append(f"cuda:{i} {p.name} sm_{p.major}{p.minor} "
                             f"{p.total_memory / 2**30:.0f} GiB (torch)")
        else:
            lines.append("no CUDA device seen by torch")
    except ImportError:
        lines.append("torch not installed")
    if os.environ.get("UNSWAG_INFO_JAX", "1") != "0":
        try:
            import jax
            lines.append("jax " + jax.__version__ + ": " +
                         ", ".join(str(d) for d in jax.devices()))
        except ImportError:
            lines.append("jax not installed")
        except Exception as e:
            lines.append(f"jax: {e}")
    return lines


def info(out: TextIO = sys.stdout) -> int:
    from . import __version__
    from . import _native as N
    p = lambda *a: print(*a, file=out)
    p(f"unswag {__version__} (python {sys.version.split()[0]})")
    try:
        l = N.lib()
    except N.UnswagError as e:
        p(f"native library: NOT AVAILABLE\n  {e}")
        return 1
    p(f"native library: {l._name} (libunswag {N.version()})")
    p("build: CPU kernels (scalar, vectorised, threaded)")
    if N.cuda_built():
        p(f"       CUDA kernels: {_cuda_archs(l._name)}")
    else:
        p("       CUDA kernels: not built (reinstall with nvcc on PATH to build them)")
    p("devices:")
    for d in _devices():
        p(f"  {d}")
    p("protocols (what is kept for backward, per element):")
    for a in ("relu", "leaky_relu", "relu6", "hardtanh"):
        p(f"  {a:<11} exact, 1 bit (gradient bitwise equal to PyTorch's)")
    for a in ("silu", "gelu", "gelu_tanh"):
        errs = []
        for b in (1, 2, 4, 8):
            try:
                errs.append(f"{b}b {N.builtin_codebook(a, b).rms_error:.4f}")
            except N.UnswagError:
                errs.append(f"{b}b n/a")
        p(f"  {a:<11} exact forward, k-bit backward (default {N.DEFAULT_BITS}); "
          f"codebook RMS error of f' under N(0,1): " + ", ".join(errs))
    p("  gated MLP  (SwiGLU/GeGLU) exact: fused keeps x, g, u; recompute keeps x only")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unswag")
    ap.add_argument("command", nargs="?", default="info", choices=["info"])
    args = ap.parse_args(argv)
    if args.command == "info":
        return info()
    return 2


if __name__ == "__main__":
    sys.exit(main())

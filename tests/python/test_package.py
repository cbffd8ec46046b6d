"""The package: lazy imports, the missing-library error, `python -m unswag info`."""
import os
import subprocess
import sys


def _py(code, env=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_import_pulls_in_neither_torch_nor_jax():
    r = _py("import sys, unswag; unswag.available(); "
            "print('torch' in sys.modules, 'jax' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_missing_library_import_works_first_call_explains():
    code = ("import unswag, unswag._native as N\n"
            "N._candidates = lambda: iter(())\n"
            "assert not unswag.available()\n"
            "try:\n    N.version()\nexcept unswag.UnswagError as e:\n    print('ERR', e)\n")
    r = _py(code)
    assert r.returncode == 0, r.stderr
    assert "ERR" in r.stdout and "pip install" in r.stdout and "UNSWAG_LIBRARY" in r.stdout


def test_library_loads_and_versions_agree():
    import unswag
    from unswag import _native as N
    assert unswag.available()
    assert N.version() == unswag.__version__


def test_info_cli():
    r = subprocess.run([sys.executable, "-m", "unswag", "info"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "UNSWAG_INFO_JAX": "0"})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    import unswag
    for word in (f"unswag {unswag.__version__}", "native library", "build:", "CUDA kernels",
                 "devices:", "relu", "exact, 1 bit", "silu", "gated MLP"):
        assert word in out, word

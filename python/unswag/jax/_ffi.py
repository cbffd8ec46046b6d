"""Loading and registering the XLA FFI handlers (libunswag_jax_ffi).

Registration happens once, when unswag.jax is first imported.  Nothing here
raises: if the library is missing or registration fails, `status()` says
why and unswag.jax falls back to the pure-JAX path (impl="auto") or raises
that reason (impl="ffi").
"""
from __future__ import annotations

import ctypes
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np

try:  # jax >= 0.4.38
    from jax import ffi as _jffi
except ImportError:  # pragma: no cover - older jax
    from jax.extend import ffi as _jffi

from .. import _native

FORWARD = "unswag_jax_forward"
BACKWARD = "unswag_jax_backward"

_state = {"tried": False, "lib": None, "cpu": False, "cuda": False, "error": None}


def _candidates():
    env = os.environ.get("UNSWAG_JAX_FFI_LIBRARY")
    if env:
        yield env
    dirs = []
    try:  # next to the libunswag that _native loaded
        dirs.append(os.path.dirname(os.path.abspath(_native.lib()._name)))
    except _native.UnswagError:
        pass
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs.append(os.path.join(pkg, "lib"))
    dirs.append(os.path.join(os.path.dirname(os.path.dirname(pkg)), "build"))
    seen = set()
    for d in dirs:
        for pattern in ("libunswag_jax_ffi.so", "libunswag_jax_ffi.dylib", "unswag_jax_ffi.dll"):
            for p in sorted(glob.glob(os.path.join(d, pattern))):
                if p not in seen:
                    seen.add(p)
                    yield p


def _register_handlers(lib, suffix: str, platform: str) -> None:
    """Registers the forward and backward handlers of one platform (lib.<target>_<suffix>)."""
    for target in (FORWARD, BACKWARD):
        _jffi.register_ffi_target(target, _jffi.pycapsule(getattr(lib, f"{target}_{suffix}")),
                                  platform=platform)


def _register():
    _state["tried"] = True
    try:
        _native.lib()  # load libunswag first (its loader explains what is missing)
    except _native.UnswagError as e:
        _state["error"] = str(e)
        return
    errors = []
    lib = None
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as e:
            errors.append(f"{path}: {e}")
    if lib is None:
        _state["error"] = ("libunswag_jax_ffi (the XLA FFI handlers) was not found"
                           + (" (tried: " + "; ".join(errors) + ")" if errors else "")
                           + ". It is built by `pip install .` when jax is installed in the "
                             "build environment (pip install jax first, then reinstall "
                             "UnSwag with --no-build-isolation), or point "
                             "UNSWAG_JAX_FFI_LIBRARY at it.")
        return
    _state["lib"] = lib
    try:
        _register_handlers(lib, "cpu", "cpu")
        _state["cpu"] = True
    except Exception as e:
        _state["error"] = f"registering the CPU FFI handlers failed: {e}"
        return
    try:
        has_cuda = bool(lib.unswag_jax_cuda_handlers()) and _native.cuda_built()
    except _native.UnswagError:
        has_cuda = False
    if has_cuda:
        try:
            _register_handlers(lib, "cuda", "CUDA")
            _state["cuda"] = True
        except Exception as e:
            _state["cuda_error"] = f"registering the CUDA FFI handlers failed: {e}"


def ensure_registered():
    if not _state["tried"]:
        _register()
    return _state


def status() -> dict:
    """{'cpu': bool, 'cuda': bool, 'error': str|None, 'library': path|None}."""
    s = ensure_registered()
    lib = s["lib"]
    return {"cpu": s["cpu"], "cuda": s["cuda"], "error": s["error"] or s.get("cuda_error"),
            "library": lib._name if lib is not None else None}


def _attrs(spec):
    a = {"act": np.int32(_native.ACTIVATIONS[spec.act]), "bits": np.int32(spec.bits),
         "slope": np.float32(spec.slope), "lo": np.float32(spec.lo), "hi": np.float32(spec.hi)}
    if spec.custom_codebook:
        a["boundaries"] = np.asarray(spec.boundaries, np.float32)
        a["levels"] = np.asarray(spec.levels, np.float32)
    return a


def _call(name, results):
    try:
        return _jffi.ffi_call(name, results, vmap_method="broadcast_all")
    except TypeError:  # pragma: no cover - jax before vmap_method
        return _jffi.ffi_call(name, results, vectorized=True)


def forward(spec, x):
    """x: (n,) -> (y (n,), codes (ceil(n*bits/8),) uint8) through the FFI."""
    from ._pure import code_bytes
    n = x.shape[-1]
    out = (jax.ShapeDtypeStruct(x.shape, x.dtype),
           jax.ShapeDtypeStruct(x.shape[:-1] + (code_bytes(n, spec.bits),), jnp.uint8))
    y, codes = _call(FORWARD, out)(x, **_attrs(spec))
    return y, codes


def backward(spec, dy, codes):
    out = jax.ShapeDtypeStruct(dy.shape, dy.dtype)
    return _call(BACKWARD, out)(dy, codes, **_attrs(spec))

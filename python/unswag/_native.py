"""ctypes loader for libunswag.

Importing this module never fails: if the native library is missing, the
first call through `lib()` raises an error that says what to do.
"""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Iterator

_LIB = None
_LOAD_ERROR: str | None = None

# enums of include/unswag.h
OK = 0
F32, F16, BF16 = 0, 1, 2
RELU, LEAKY_RELU, RELU6, HARDTANH, SILU, GELU, GELU_TANH = range(7)
ACTIVATIONS = {"relu": RELU, "leaky_relu": LEAKY_RELU, "relu6": RELU6, "hardtanh": HARDTANH,
               "silu": SILU, "gelu": GELU, "gelu_tanh": GELU_TANH}
EXACT = {"relu", "leaky_relu", "relu6", "hardtanh"}
STATUS_CUDA_NOT_BUILT = 9
# Code bits of the smooth activations unless given (torch, JAX, the surgery). 4 is the
# smallest width whose final validation loss landed within one standard deviation of the
# exact run for both GELU and SiLU in bench/gpu/bench_convergence.py (2 bits did not:
# bench/results/gpu-convergence-*-h200-2026-11-30.txt).
DEFAULT_BITS = 4


class UnswagError(RuntimeError):
    """An error status returned by libunswag, or a missing native library."""


class Codebook(ctypes.Structure):
    _fields_ = [("bits", ctypes.c_int),
                ("boundaries", ctypes.c_float * 255),
                ("levels", ctypes.c_float * 256),
                ("rms_error", ctypes.c_double)]


class FitOptions(ctypes.Structure):
    """unswag_fit_options: the weighting and grid of unswag_codebook_fit."""
    _fields_ = [("sigma", ctypes.c_double),
                ("hist_counts", ctypes.POINTER(ctypes.c_double)),
                ("hist_bins", ctypes.c_size_t),
                ("hist_lo", ctypes.c_double), ("hist_hi", ctypes.c_double),
                ("grid_cells", ctypes.c_size_t),
                ("range", ctypes.c_double)]


DERIVATIVE_FN = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_void_p)


# unswag_code_kind
CODES_DETERMINISTIC, CODES_STOCHASTIC = 0, 1
CODE_KINDS = {"deterministic": CODES_DETERMINISTIC, "stochastic": CODES_STOCHASTIC}


class Op(ctypes.Structure):
    _fields_ = [("act", ctypes.c_int), ("bits", ctypes.c_int), ("slope", ctypes.c_float),
                ("lo", ctypes.c_float), ("hi", ctypes.c_float),
                ("codebook", ctypes.POINTER(Codebook)),
                ("code_kind", ctypes.c_int), ("seed", ctypes.c_uint64)]


def _candidates() -> Iterator[str]:
    env = os.environ.get("UNSWAG_LIBRARY")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    for pattern in ("lib/libunswag.so*", "lib/libunswag*.dylib", "lib/unswag.dll"):
        yield from sorted(glob.glob(os.path.join(here, pattern)))
    # a development build tree next to the sources
    root = os.path.dirname(os.path.dirname(here))
    yield from sorted(glob.glob(os.path.join(root, "build", "libunswag.so*")))


def _declare(l: ctypes.CDLL) -> None:
    c = ctypes
    vp, sz, i, st, f = c.c_void_p, c.c_size_t, c.c_int, c.c_int, c.c_float
    sigs = {
        "unswag_status_string": ([i], c.c_char_p),
        "unswag_last_error": ([], c.c_char_p),
        "unswag_version_string": ([], c.c_char_p),
        "unswag_cuda_built": ([], i),
        "unswag_code_bytes": ([sz, i, c.POINTER(sz)], st),
        "unswag_codebook_builtin": ([i, i, c.POINTER(Codebook)], st),
        "unswag_op_validate": ([c.POINTER(Op)], st),
        "unswag_codebook_validate": ([c.POINTER(Codebook)], st),
        "unswag_stochastic_levels": ([i, i, c.POINTER(f)], st),
        "unswag_derivative": ([i, c.c_double], c.c_double),
        "unswag_codebook_fit": ([DERIVATIVE_FN, vp, i, c.POINTER(FitOptions),
                                 c.POINTER(Codebook)], st),
        "unswag_forward": ([c.POINTER(Op), i, vp, vp, vp, sz], st),
        "unswag_backward": ([c.POINTER(Op), i, vp, vp, vp, sz], st),
        "unswag_forward_cuda": ([c.POINTER(Op), i, vp, vp, vp, sz, vp], st),
        "unswag_backward_cuda": ([c.POINTER(Op), i, vp, vp, vp, sz, vp], st),
        "unswag_gated_forward": ([i, i, vp, vp, vp, sz], st),
        "unswag_gated_backward": ([i, i, vp, vp, vp, vp, vp, sz], st),
        "unswag_gated_forward_cuda": ([i, i, vp, vp, vp, sz, vp], st),
        "unswag_gated_backward_cuda": ([i, i, vp, vp, vp, vp, vp, sz, vp], st),
        # RMSNorm: (dtype, x, w, y, rstd, rows, cols, eps, weight_offset[, stream])
        "unswag_rmsnorm_forward": ([i, vp, vp, vp, vp, sz, sz, f, f], st),
        "unswag_rmsnorm_forward_cuda": ([i, vp, vp, vp, vp, sz, sz, f, f, vp], st),
        # (dtype, dy, x, w, rstd, dx, dw_accum, [workspace, workspace_bytes,] rows, cols,
        #  weight_offset[, stream])
        "unswag_rmsnorm_backward": ([i, vp, vp, vp, vp, vp, vp, sz, sz, f], st),
        "unswag_rmsnorm_backward_cuda": ([i, vp, vp, vp, vp, vp, vp, vp, sz, sz, sz, f, vp], st),
        "unswag_rmsnorm_workspace_bytes": ([sz, sz, c.POINTER(sz)], st),
    }
    for name, (args, res) in sigs.items():
        if not hasattr(l, name):
            raise OSError(f"{name} missing from {l._name}")
        f = getattr(l, name)
        f.argtypes, f.restype = args, res


def lib() -> ctypes.CDLL:
    """The loaded library; raises UnswagError with a remedy if unavailable."""
    global _LIB, _LOAD_ERROR
    if _LIB is not None:
        return _LIB
    if _LOAD_ERROR is None:
        tried = []
        for path in _candidates():
            try:
                l = ctypes.CDLL(path)
                _declare(l)
                _LIB = l
                return l
            except OSError as e:
                tried.append(f"{path}: {e}")
        _LOAD_ERROR = ("libunswag (the native library) was not found or failed to load"
                       + (" (tried: " + "; ".join(tried) + ")" if tried else "")
                       + ". Reinstall with `pip install .` from the UnSwag source tree "
                         "(needs CMake and a C compiler), or point UNSWAG_LIBRARY at libunswag.so.")
    raise UnswagError(_LOAD_ERROR)


def available() -> bool:
    try:
        lib()
        return True
    except UnswagError:
        return False


def check(status: int, what: str = "") -> None:
    """Raise UnswagError for a non-OK status, with the library's detail."""
    if status == OK:
        return
    l = lib()
    name = l.unswag_status_string(status).decode()
    detail = l.unswag_last_error().decode()
    msg = f"{what + ': ' if what else ''}{name}" + (f" ({detail})" if detail else "")
    if status == STATUS_CUDA_NOT_BUILT:
        msg += ". Reinstall on a machine with nvcc on PATH to build the CUDA kernels."
    raise UnswagError(msg)


def make_op(act: str, bits: int, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0,
            codebook: Codebook | None = None, codes: str = "deterministic",
            seed: int = 0) -> Op:
    """An unswag_op.  codes="stochastic" (silu/gelu/gelu_tanh, no codebook): unbiased
    random codes drawn from `seed` (unswag.h, UNSWAG_CODES_STOCHASTIC)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
    if codes not in CODE_KINDS:
        raise ValueError(f"unknown codes {codes!r}; expected one of {sorted(CODE_KINDS)}")
    op = Op(ACTIVATIONS[act], bits, slope, lo, hi, None, CODE_KINDS[codes],
            int(seed) & 0xFFFFFFFFFFFFFFFF)
    if codebook is not None:
        op.codebook = ctypes.pointer(codebook)
    return op


def stochastic_levels(act: str, bits: int) -> list[float]:
    """The 2^bits levels of stochastic codes of smooth `act` (unswag_stochastic_levels)."""
    levels = (ctypes.c_float * 256)()
    check(lib().unswag_stochastic_levels(ACTIVATIONS[act], bits, levels),
          f"stochastic_levels({act}, bits={bits})")
    return list(levels[:1 << bits])


def code_bytes(n: int, bits: int) -> int:
    out = ctypes.c_size_t()
    check(lib().unswag_code_bytes(n, bits, ctypes.byref(out)), "code_bytes")
    return out.value


def builtin_codebook(act: str, bits: int) -> Codebook:
    cb = Codebook()
    check(lib().unswag_codebook_builtin(ACTIVATIONS[act], bits, ctypes.byref(cb)), "codebook")
    return cb


def fit_codebook_histogram(act: str, bits: int, counts, lo: float, hi: float,
                           grid_cells: int = 0, grid_range: float = 0.0) -> Codebook:
    """unswag_codebook_fit of the exact derivative of smooth `act` at `bits`, weighted by
    a histogram of observed inputs: `counts` over equal bins of [lo, hi]; the fit's grid
    covers [-grid_range, grid_range] (0: [lo, hi])."""
    if act not in ACTIVATIONS or act in EXACT:
        raise ValueError(f"fit_codebook_histogram: {act!r} is not a smooth activation")
    l = lib()
    a = ACTIVATIONS[act]
    arr = (ctypes.c_double * len(counts))(*[float(v) for v in counts])
    opts = FitOptions(0.0, arr, len(counts), float(lo), float(hi), int(grid_cells),
                      float(grid_range))
    deriv = DERIVATIVE_FN(lambda x, _user: l.unswag_derivative(a, x))
    cb = Codebook()
    check(l.unswag_codebook_fit(deriv, None, bits, ctypes.byref(opts), ctypes.byref(cb)),
          f"codebook_fit({act}, bits={bits}, histogram of {len(counts)} bins)")
    return cb


def version() -> str:
    return lib().unswag_version_string().decode()


def cuda_built() -> bool:
    return bool(lib().unswag_cuda_built())

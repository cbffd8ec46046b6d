"""UnSwag: exact forward, k-bit codes for the backward pass.

Importing this package imports neither torch nor JAX; their parts load on
first use (`unswag.torch`, `unswag.jax`, `apply_unswag_surgery`,
`unswag_relu`).
"""
from ._native import UnswagError, available, cuda_built

__all__ = ["UnswagError", "available", "cuda_built"]


def _version() -> str:
    """The loaded library's version (include/unswag.h defines it), else the installed one's."""
    try:
        from ._native import version
        return version()
    except UnswagError:
        from importlib import metadata
        try:
            return metadata.version("unswag")
        except metadata.PackageNotFoundError:
            return "unknown"


def __getattr__(name: str):
    # lazy, so that importing unswag loads neither torch, JAX nor the library
    if name == "__version__":
        return _version()
    if name in ("apply_unswag_surgery", "remove_unswag_surgery"):
        from .torch import surgery  # imports torch only here, on first use
        return getattr(surgery, name)
    if name == "unswag_relu":
        from .jax import relu
        return relu
    raise AttributeError(f"module 'unswag' has no attribute {name!r}")

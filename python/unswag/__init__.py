"""UnSwag: exact forward, k-bit codes for the backward pass.

Importing this package imports neither torch nor JAX; their parts load on
first use (`unswag.torch`, `unswag.jax`, `apply_unswag_surgery`,
`unswag_relu`).
"""
from ._native import UnswagError, available, cuda_built  # noqa: F401

__version__ = "0.1.0"


def __getattr__(name):
    # lazy: the seed's `from unswag import apply_unswag_surgery / unswag_relu`
    if name in ("apply_unswag_surgery", "remove_unswag_surgery"):
        from .torch import surgery  # imports torch only here, on first use
        return getattr(surgery, name)
    if name == "unswag_relu":
        from .jax import relu
        return relu
    raise AttributeError(f"module 'unswag' has no attribute {name!r}")

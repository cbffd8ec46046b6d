"""UnSwag for JAX: activations whose backward pass keeps a k-bit code of x.

    from unswag.jax import relu, silu, gelu
    y = relu(x)                        # exact forward and exact gradient, 1 bit kept
    jax.grad(lambda x: silu(x, bits=4).sum())(x)   # 4 bits kept, dx = dy * level[code]

Each function is a jax.custom_vjp whose only residual is the packed code
(uint8, ceil(n*bits/8) bytes for n elements); it works under jit, grad and
vmap, with any shape, for float32, float16 and bfloat16.

impl="auto" (default) runs libunswag's kernels through XLA FFI handlers on
CPU and CUDA when they are built, and a pure-JAX implementation with the
same code bytes elsewhere (TPU, or without the native library);
impl="ffi" or impl="pure" forces one.  Importing this module registers the
FFI handlers (see `ffi_status()`).
"""
from ._ffi import ensure_registered as _ensure_registered
from ._ffi import status as ffi_status
from ._ops import (
    DEFAULT_BITS,
    Spec,
    activation,
    backward,
    builtin_codebook,
    code_bytes,
    exact_derivative,
    forward,
    gelu,
    gradient_error_bound,
    hardtanh,
    leaky_relu,
    make_spec,
    relu,
    relu6,
    silu,
)

_ensure_registered()

__all__ = [
    "DEFAULT_BITS",
    "Spec",
    "activation",
    "backward",
    "builtin_codebook",
    "code_bytes",
    "exact_derivative",
    "ffi_status",
    "forward",
    "gelu",
    "gradient_error_bound",
    "hardtanh",
    "leaky_relu",
    "make_spec",
    "relu",
    "relu6",
    "silu",
]

"""nn.Module twins of the functional activations (no parameters, no buffers)."""
from __future__ import annotations

from torch import Tensor, nn

from . import functional as F


class _Act(nn.Module):
    act = ""

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class ReLU(_Act):
    """Exact ReLU, 1 bit kept for backward.  ``inplace`` is accepted and ignored."""
    act = "relu"

    def __init__(self, inplace: bool = False, bits: int = 1):
        super().__init__()
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, self.bits)


class LeakyReLU(_Act):
    act = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False, bits: int = 1):
        super().__init__()
        self.negative_slope, self.bits = negative_slope, bits

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope, self.bits)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}, bits={self.bits}"


class ReLU6(_Act):
    act = "relu6"

    def __init__(self, inplace: bool = False, bits: int = 1):
        super().__init__()
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x, self.bits)


class Hardtanh(_Act):
    act = "hardtanh"

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False,
                 bits: int = 1):
        super().__init__()
        self.min_val, self.max_val, self.bits = min_val, max_val, bits

    def forward(self, x: Tensor) -> Tensor:
        return F.hardtanh(x, self.min_val, self.max_val, self.bits)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}, bits={self.bits}"


class SiLU(_Act):
    """SiLU with an exact forward and a k-bit (default 2) approximate backward."""
    act = "silu"

    def __init__(self, inplace: bool = False, bits: int = F.DEFAULT_BITS):
        super().__init__()
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x, self.bits)


class GELU(_Act):
    """GELU (erf, or tanh with approximate='tanh'); exact forward, k-bit backward."""

    def __init__(self, approximate: str = "none", bits: int = F.DEFAULT_BITS):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate, self.bits = approximate, bits
        self.act = "gelu" if approximate == "none" else "gelu_tanh"

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate, self.bits)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}, bits={self.bits}"

"""nn.Module twins of the functional activations (no parameters, no buffers)."""
from __future__ import annotations

from torch import Tensor, nn

from . import functional as F


class _Act(nn.Module):
    """An activation ``act`` keeping ``bits`` bits an element; subclasses with parameters
    name them in ``_shown`` (for the repr) and override ``forward``.  ``inplace`` is
    accepted, as torch.nn's modules take it, and ignored (the output is a new tensor)."""
    act = ""
    _shown: tuple = ()

    def __init__(self, inplace: bool = False, bits: int = 1) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        return F.activation(x, self.act, self.bits)

    def extra_repr(self) -> str:
        return ", ".join([f"{n}={getattr(self, n)!r}" for n in self._shown]
                         + [f"bits={self.bits}"])


class ReLU(_Act):
    """Exact ReLU, 1 bit kept for backward.  ``inplace`` is accepted and ignored."""
    act = "relu"


class LeakyReLU(_Act):
    act = "leaky_relu"
    _shown = ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False, bits: int = 1):
        super().__init__(inplace, bits)
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope, self.bits)


class ReLU6(_Act):
    act = "relu6"


class Hardtanh(_Act):
    act = "hardtanh"
    _shown = ("min_val", "max_val")

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False,
                 bits: int = 1):
        super().__init__(inplace, bits)
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x: Tensor) -> Tensor:
        return F.hardtanh(x, self.min_val, self.max_val, self.bits)


class SiLU(_Act):
    """SiLU with an exact forward and a k-bit (default 2) approximate backward."""
    act = "silu"

    def __init__(self, inplace: bool = False, bits: int = F.DEFAULT_BITS):
        super().__init__(inplace, bits)


class GELU(_Act):
    """GELU (erf, or tanh with approximate='tanh'); exact forward, k-bit backward."""
    _shown = ("approximate",)

    def __init__(self, approximate: str = "none", bits: int = F.DEFAULT_BITS):
        super().__init__(bits=bits)
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.act = "gelu" if approximate == "none" else "gelu_tanh"

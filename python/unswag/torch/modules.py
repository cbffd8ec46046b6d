"""nn.Module twins of the functional activations (no parameters, no buffers)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import functional as F


def stochastic_codebook_text(act: str, bits: int) -> str:
    """The surgery report's line for stochastic codes of `act` at `bits`."""
    from .._native import stochastic_levels
    lv = stochastic_levels(act, bits)
    return (f"codebook: stochastic {act}, {bits} bit ({1 << bits} levels {lv[0]:.4g} .. "
            f"{lv[-1]:.4g}, unbiased: E[level] = f'(x), fresh seed per call)")


class _Act(nn.Module):
    """Base of the activation modules.  The relu family's constructors mirror torch.nn's
    (``inplace`` accepted and ignored) and store ``params``, which the functional form
    takes after x, in that order."""
    act = ""
    params: tuple = ()

    def forward(self, x: Tensor) -> Tensor:
        return getattr(F, self.act)(x, *(getattr(self, k) for k in self.params), self.bits)

    def extra_repr(self) -> str:
        return ", ".join([f"{k}={getattr(self, k)}" for k in self.params] + [f"bits={self.bits}"])


class _NoParamAct(_Act):
    def __init__(self, inplace: bool = False, bits: int = 1):
        super().__init__()
        self.bits = bits


class ReLU(_NoParamAct):
    """Exact ReLU, 1 bit kept for backward."""
    act = "relu"


class LeakyReLU(_Act):
    act, params = "leaky_relu", ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False, bits: int = 1):
        super().__init__()
        self.negative_slope, self.bits = negative_slope, bits


class ReLU6(_NoParamAct):
    """Exact ReLU6, 1 bit kept for backward."""
    act = "relu6"


class Hardtanh(_Act):
    act, params = "hardtanh", ("min_val", "max_val")

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False,
                 bits: int = 1):
        super().__init__()
        self.min_val, self.max_val, self.bits = min_val, max_val, bits


class SmoothAct(_Act):
    """silu / gelu: exact forward, k-bit codebook backward.  ``codebook`` is None (the
    built-in table) or a custom one (boundaries then levels, floats), e.g. calibrated on
    the layer's own inputs (unswag.torch.calibration); ``calibration``, when set,
    records the inputs of the forward calls it selects and refits the codebook.
    ``codes="stochastic"``: unbiased random codes instead (no codebook, no calibration;
    a fresh seed every forward call)."""

    def __init__(self, bits: int, codebook=None, codes: str = "deterministic"):
        super().__init__()
        if codes not in ("deterministic", "stochastic"):
            raise ValueError(f"codes must be 'deterministic' or 'stochastic', got {codes!r}")
        if codes == "stochastic" and codebook is not None:
            raise ValueError("stochastic codes use their own level grid; pass no codebook")
        self.bits = bits
        self.codes = codes
        self.codebook = None if codebook is None else [float(v) for v in codebook]
        self.calibration = None

    def start_calibration(self, calls=None, every=None, train_only=False) -> None:
        """Record the inputs of the next `calls` forward calls (None: until
        finish_calibration), again every `every` calls, and fit after each window;
        train_only: count only calls in train mode with gradients on."""
        if self.codes == "stochastic":
            raise ValueError("stochastic codes have no codebook to calibrate")
        from .calibration import Calibration
        self.calibration = Calibration(calls, every, train_only)

    def finish_calibration(self) -> None:
        """Fit on what the current window recorded (nothing recorded: no change)."""
        from . import calibration as C
        cal = self.calibration
        if cal is None or cal.counts is None:
            return
        counts = cal.counts.cpu()
        self.codebook = C.fit(self.act, self.bits, counts)
        cal.fits += 1
        cal.last = (cal.window_calls, int(counts.sum()),
                    C.rms_under(self.act, self.bits, self.codebook, counts),
                    C.rms_under(self.act, self.bits, None, counts))
        cal.counts, cal.window_calls = None, 0

    def _observe(self, x: Tensor) -> None:
        cal = self.calibration
        if cal.train_only and not (self.training and torch.is_grad_enabled()):
            return
        if cal.recording():
            cal.add(x)
            if cal.window_done():
                self.finish_calibration()
        cal.t += 1

    def forward(self, x: Tensor) -> Tensor:
        if self.calibration is not None and not self.calibration.finished():
            self._observe(x)
        return self._act(x)

    def codebook_text(self) -> str:
        """The codebook in use, for the surgery report: kind, bits, levels, errors."""
        from .functional import codebook as builtin
        m = 1 << self.bits
        cal = self.calibration
        if self.codes == "stochastic":
            return stochastic_codebook_text(self.act, self.bits)
        if self.codebook is None:
            text = (f"codebook: built-in {self.act}, {self.bits} bit ({m} levels, L2 rms "
                    f"{builtin(self.act, self.bits)[2]:.4g} under N(0,1))")
            if cal is not None and cal.calls is not None:
                text += (f"; calibrated per layer after its first {cal.calls} "
                         f"{'training ' if cal.train_only else ''}calls")
            return text
        text = f"codebook: calibrated {self.act}, {self.bits} bit ({m} levels"
        if cal is not None and cal.last is not None:
            calls, n, rms, rms0 = cal.last
            text += (f", histogram of {n} inputs over {calls} calls; L2 rms there {rms:.4g}, "
                     f"built-in's {rms0:.4g}")
        text += ")"
        if cal is not None and cal.every:
            text += (f"; refitted every {cal.every} {'training ' if cal.train_only else ''}"
                     f"calls ({cal.fits} fits so far)")
        return text

    def extra_repr(self) -> str:
        return (f"bits={self.bits}" + (", codebook=custom" if self.codebook is not None else "")
                + (", codes='stochastic'" if self.codes == "stochastic" else ""))


class SiLU(SmoothAct):
    """SiLU with an exact forward and a k-bit (default DEFAULT_BITS) approximate backward."""
    act = "silu"

    def __init__(self, inplace: bool = False, bits: int = F.DEFAULT_BITS, codebook=None,
                 codes: str = "deterministic"):
        super().__init__(bits, codebook, codes)

    def _act(self, x: Tensor) -> Tensor:
        return F.silu(x, self.bits, self.codebook, self.codes)


class GELU(SmoothAct):
    """GELU (erf, or tanh with approximate='tanh'); exact forward, k-bit backward."""

    def __init__(self, approximate: str = "none", bits: int = F.DEFAULT_BITS, codebook=None,
                 codes: str = "deterministic"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__(bits, codebook, codes)
        self.approximate = approximate
        self.act = "gelu" if approximate == "none" else "gelu_tanh"

    def _act(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate, self.bits, self.codebook, self.codes)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}, " + super().extra_repr()

"""Per-layer codebooks calibrated on the data.

The built-in codebooks are L2-optimal under a standard normal weighting of the
activation's input.  A layer's real inputs are not N(0, 1): early in training they
sit in a narrow band around 0, later they spread.  A calibrated codebook is the
L2-optimal fit of f' under a histogram of the inputs the layer actually saw
(``unswag_codebook_fit`` with ``hist_counts``), so its levels go where the data is.

Two ways to get one:

- ``apply_unswag_surgery(model, bits=2, calibrate=N)``: each patched silu/gelu
  records its inputs during its first N forward calls (using the built-in codebook
  meanwhile), then fits and switches to its own codebook;
  ``recalibrate_every=K`` repeats that every K calls (the fit follows the inputs as
  training moves them).
- ``calibrate_codebooks(model, batches)``: runs the model on ``batches`` without
  gradients and fits every patched silu/gelu on what it saw.

The histogram is exact counts (``torch.bucketize`` + ``torch.bincount``) of the inputs over
HIST_BINS equal bins of [-HIST_RANGE, HIST_RANGE]; inputs beyond it count in the end
bins (f' is 0 or 1 to within 1e-40 out there) and NaN in the lowest bin, where the
code format puts it (code 0).  Counting and fitting are deterministic, so the same
inputs give the same codebook on the CPU and on CUDA.

The codebook is a plain attribute of the module (``module.codebook``: boundaries then
levels, floats), not in ``state_dict``; save it yourself if you need it again.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import torch

HIST_RANGE = 16.0   # a power of two: every bin edge is exact in float
HIST_BINS = 4096    # bin width 1/128
_CHUNK = 1 << 22    # elements counted at a time (bounds the int64 index copy)


def histogram(x: torch.Tensor) -> torch.Tensor:
    """Counts (int64, HIST_BINS, on x's device) of x over [-HIST_RANGE, HIST_RANGE].
    Bins by comparison with the edges (all exact floats), never by arithmetic on x, so
    no rounding can move an input across an edge."""
    flat = x.detach().reshape(-1)
    out = torch.zeros(HIST_BINS, dtype=torch.int64, device=x.device)
    edges = ((torch.arange(HIST_BINS + 1, dtype=torch.float32) - HIST_BINS / 2)
             * (2 * HIST_RANGE / HIST_BINS)).to(x.device)
    for s in range(0, flat.numel(), _CHUNK):
        t = flat[s:s + _CHUNK].float()
        t = torch.nan_to_num(t, nan=-HIST_RANGE, posinf=HIST_RANGE, neginf=-HIST_RANGE)
        idx = torch.bucketize(t, edges, right=True) - 1  # edges[idx] <= t < edges[idx + 1]
        out += torch.bincount(idx.clamp_(0, HIST_BINS - 1), minlength=HIST_BINS)
    return out


def grid_range(counts) -> float:
    """Half-width of the fit's grid: the smallest power of two (1/16 to HIST_RANGE) that
    covers every non-empty bin, so the grid's 8192 cells sit where the data is (a narrow
    histogram on the full range leaves an 8-bit fit ~2 cells a piece)."""
    nz = torch.nonzero(torch.as_tensor(counts)).flatten()
    if nz.numel() == 0:
        return HIST_RANGE
    w = 2 * HIST_RANGE / HIST_BINS
    reach = max(abs(-HIST_RANGE + w * int(nz[0])), abs(-HIST_RANGE + w * (int(nz[-1]) + 1)))
    r = 1.0 / 16
    while r < reach and r < HIST_RANGE:
        r *= 2
    return r


def fit(act: str, bits: int, counts) -> List[float]:
    """The histogram-weighted L2 fit of act' at `bits`: boundaries then levels."""
    from .. import _native as N
    counts = [float(c) for c in (counts.tolist() if hasattr(counts, "tolist") else counts)]
    cb = N.fit_codebook_histogram(act, bits, counts, -HIST_RANGE, HIST_RANGE,
                                  grid_range=grid_range(counts))
    m = 1 << bits
    return list(cb.boundaries[: m - 1]) + list(cb.levels[:m])


_SUB = 16  # evaluation points per bin (the histogram's density is constant on a bin)
_DERIV = {}  # act -> f' at the evaluation points (float64), computed once


def _eval_points(act: str):
    from .. import _native as N
    if act not in _DERIV:
        w = 2 * HIST_RANGE / HIST_BINS
        x = -HIST_RANGE + w * (torch.arange(HIST_BINS * _SUB, dtype=torch.float64) + 0.5) / _SUB
        lib, a = N.lib(), N.ACTIVATIONS[act]
        d = torch.tensor([lib.unswag_derivative(a, v) for v in x.tolist()], dtype=torch.float64)
        _DERIV[act] = (x, d)
    return _DERIV[act]


def rms_under(act: str, bits: int, codebook: Optional[List[float]], counts) -> float:
    """Weighted RMS of f' - q under the histogram `counts` (density constant on each bin,
    _SUB midpoints a bin); codebook None: the built-in one.  So a calibrated and the
    built-in codebook compare on the same data."""
    from .. import _native as N
    m = 1 << bits
    if codebook is None:
        cb = N.builtin_codebook(act, bits)
        bounds, levels = list(cb.boundaries[: m - 1]), list(cb.levels[:m])
    else:
        bounds, levels = codebook[: m - 1], codebook[m - 1:]
    x, d = _eval_points(act)
    c = torch.as_tensor([float(v) for v in counts], dtype=torch.float64).repeat_interleave(_SUB)
    code = torch.bucketize(x, torch.tensor(bounds, dtype=torch.float64), right=False)
    q = torch.tensor(levels, dtype=torch.float64)[code]
    return float(((c * (d - q) ** 2).sum() / c.sum()).sqrt())


class Calibration:
    """When a module records its inputs and refits: its first `calls` forward calls
    (calls=None: every call until closed), and again every `every` calls.  With
    train_only, only training calls count (module in train mode, gradients on), so an
    evaluation pass in between neither shifts the window nor enters the histogram."""

    def __init__(self, calls: Optional[int], every: Optional[int] = None,
                 train_only: bool = False):
        for name, v in (("calls", calls), ("every", every)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"calibration: {name} must be a positive int or None, got {v!r}")
        if every is not None and (calls is None or every <= calls):
            raise ValueError(f"calibration: every ({every}) needs calls and must exceed it "
                             f"(calls={calls})")
        self.calls, self.every, self.train_only = calls, every, train_only
        self.t = 0              # forward calls seen
        self.counts = None      # histogram of the current window (device tensor)
        self.window_calls = 0   # calls in the current window
        self.fits = 0           # codebooks fitted so far
        self.last = None        # (calls, inputs, rms calibrated, rms built-in) of the last fit
        self.closed = False     # calibrate_codebooks is done with it

    def finished(self) -> bool:
        """Nothing more to record: closed, or the single window is over."""
        return self.closed or (self.calls is not None and self.every is None
                               and self.t >= self.calls)

    def recording(self) -> bool:
        if self.calls is None:
            return True
        pos = self.t % self.every if self.every else self.t
        return pos < self.calls

    def window_done(self) -> bool:
        if self.calls is None:
            return False
        pos = self.t % self.every if self.every else self.t
        return pos == self.calls - 1

    def add(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        h = histogram(x)
        self.counts = h if self.counts is None else self.counts + h
        self.window_calls += 1


def calibrate_codebooks(model, batches: Iterable, forward=None) -> Dict[str, str]:
    """Fit a codebook for every patched silu/gelu of `model` (apply_unswag_surgery
    first) on the inputs it sees while the model runs on `batches` (no gradients).
    ``forward(model, batch)`` runs one batch (default: ``model(**batch)`` for a dict,
    ``model(*batch)`` for a tuple or list, else ``model(batch)``).  Returns
    {module path: its codebook's description}."""
    from .modules import SmoothAct
    mods = [(p, m) for p, m in model.named_modules() if isinstance(m, SmoothAct)]
    if not mods:
        raise ValueError("calibrate_codebooks: the model has no UnSwag silu/gelu module "
                         "(run apply_unswag_surgery first)")
    for _, m in mods:
        m.start_calibration(None)
    try:
        with torch.no_grad():
            for b in batches:
                if forward is not None:
                    forward(model, b)
                elif isinstance(b, dict):
                    model(**b)
                elif isinstance(b, (tuple, list)):
                    model(*b)
                else:
                    model(b)
        for _, m in mods:
            m.finish_calibration()
    finally:
        for _, m in mods:
            m.calibration.closed = True
    return {p: m.codebook_text() for p, m in mods}

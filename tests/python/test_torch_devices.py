"""The torch ops' per-device kernels: one implementation, registered for CPU and CUDA.

Runs without a GPU: the CUDA kernel of each op is called with CPU tensors, the CUDA device
context and stream stubbed, and the library's functions recorded instead of run.  It must
call the ``_cuda`` twin of the CPU kernel's C function with the same arguments plus the
stream (and, for the RMSNorm backward, the workspace), so the CPU tests cover the rest.
"""
import contextlib
import ctypes

import pytest

torch = pytest.importorskip("torch")
import unswag.torch  # noqa: F401  (registers torch.ops.unswag.*)
from unswag import _native as N
from unswag.torch import _device, norm_ops, ops

pytestmark = pytest.mark.skipif(not N.available(), reason="libunswag not built")

STREAM = 0x5EED0


class _Recorder:
    """Stands in for the loaded library: records each call; runs only host-side functions."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            return N.OK if name.endswith("_cuda") else getattr(self.real, name)(*args)
        return call


def _normalise(args, inputs):
    """Arguments with pointers named by the input they point to ("out" for outputs)."""
    names = {t.data_ptr(): k for k, t in inputs.items()}
    out = []
    for a in args:
        if isinstance(a, ctypes.c_void_p):
            out.append("stream" if a.value == STREAM else names.get(a.value, "out"))
        elif type(a).__name__ == "CArgObject":  # byref(unswag_op)
            op = a._obj
            out.append(("op", op.act, op.bits, op.slope, op.lo, op.hi))
        else:
            out.append(a)
    return out


def _run_both(monkeypatch, impl, inputs, *params):
    rec = _Recorder(N.lib())
    monkeypatch.setattr(N, "lib", lambda: rec)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda d=None: type("S", (), {"cuda_stream": STREAM})())
    cpu, cuda = _device.DEVICES
    assert (cpu.type, cuda.type) == ("cpu", "cuda")
    impl(cpu, *inputs.values(), *params)
    n_cpu = len(rec.calls)
    impl(cuda, *inputs.values(), *params)
    return rec.calls[:n_cpu], rec.calls[n_cpu:]


def _x(shape=(5, 7), dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_kernels_call_the_cuda_twin_with_the_same_arguments(monkeypatch, dtype):
    x, dy, u = _x(dtype=dtype), _x(dtype=dtype, seed=1), _x(dtype=dtype, seed=2)
    codes = torch.ops.unswag.act_forward(x, "silu", 2, 0.0, -1.0, 1.0)[1]
    cases = [
        (ops._act_forward, {"x": x}, ("leaky_relu", 1, 0.25, -1.0, 1.0)),
        (ops._act_backward, {"dy": dy, "codes": codes}, ("silu", 2, 0.0, -1.0, 1.0)),
        (ops._gated_forward, {"g": x, "u": u}, ("gelu",)),
        (ops._gated_backward, {"dh": dy, "g": x, "u": u}, ("silu",)),
        (norm_ops._rms_norm_forward, {"x": x, "w": u[0]}, (1e-6,)),
    ]
    for impl, inputs, params in cases:
        monkeypatch.undo()
        (cpu_call,), (cuda_call,) = _run_both(monkeypatch, impl, inputs, *params)
        assert cuda_call[0] == cpu_call[0] + "_cuda"
        assert (_normalise(cuda_call[1], inputs)
                == _normalise(cpu_call[1], inputs) + ["stream"]), impl.__name__


def test_rms_norm_backward_cuda_adds_a_workspace(monkeypatch):
    x, dy, w = _x((3, 40)), _x((3, 40), seed=1), _x((40,), seed=2)
    _y, rstd = torch.ops.unswag.rms_norm_forward(x, w, 1e-6)
    inputs = {"dy": dy, "x": x, "w": w, "rstd": rstd}
    (cpu_call,), (size_call, cuda_call) = _run_both(monkeypatch, norm_ops._rms_norm_backward,
                                                    inputs)
    assert size_call[0] == "unswag_rmsnorm_workspace_bytes" and size_call[1][:2] == (3, 40)
    need = ctypes.c_size_t()
    assert N.lib().unswag_rmsnorm_workspace_bytes(3, 40, ctypes.byref(need)) == N.OK
    assert cuda_call[0] == cpu_call[0] + "_cuda"
    cpu_args, cuda_args = _normalise(cpu_call[1], inputs), _normalise(cuda_call[1], inputs)
    # (dtype, dy, x, w, rstd, dx, dw | workspace, bytes | rows, cols, weight offset | stream)
    assert cuda_args == cpu_args[:7] + ["out", max(need.value, 4)] + cpu_args[7:] + ["stream"]


def _default_args():
    x = torch.ones(4, 8)
    return {"act_forward": (x, "relu", 1, 0.0, -1.0, 1.0),
            "act_backward": (x, torch.ones(4, dtype=torch.uint8), "relu", 1, 0.0, -1.0, 1.0),
            "gated_forward": (x, x, "silu"),
            "gated_backward": (x, x, x, "silu"),
            "rms_norm_forward": (x, x[0], 1e-6),
            "rms_norm_backward": (x, x, x[0], x[:, 0])}


@pytest.mark.parametrize("name", list(_default_args()))
def test_one_kernel_per_device_and_a_default_that_refuses(name):
    op = getattr(torch.ops.unswag, name).default
    for key in ("CPU", "CUDA", "CompositeExplicitAutograd", "Meta"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), key), (name, key)
    # the default kernel serves devices without a kernel of their own (xpu, mps, ...)
    default = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    with pytest.raises(NotImplementedError, match=f"unswag.{name}: tensors on .* not supported"):
        op.redispatch(default, *_default_args()[name])

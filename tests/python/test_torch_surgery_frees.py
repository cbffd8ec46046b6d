"""A patched model is freed as soon as its last reference goes, as an unpatched one is.

The surgery stores replacement forwards and its undo records on the model.  Had they held
the model, `del model` would leave the weights (on a GPU: their memory) and the long-context
mode's pinned host memory to the cyclic garbage collector, which may run much later: on the
2-GPU benchmark a leftover model added ~2 GiB to the next mode's peak.  The checks run with
the cyclic collector off, so only plain reference counting can free the model.
"""
import gc
import weakref

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import conftest as C
from unswag import apply_unswag_surgery, remove_unswag_surgery
from unswag.torch.long_context import LongContextConfig, reserve_host_memory

MODES = {
    "codes": ("gpt2", {}),
    "gated-fused": ("llama", {"gated": "fused"}),
    "recompute-chunked-loss": ("llama", {"gated": "recompute", "lm_loss": "chunked"}),
    "attention": ("llama", {"attention": "sdpa"}),
    "long-context": ("llama", {"long_context": LongContextConfig(chunk_tokens=8)}),
}


@pytest.fixture
def no_cyclic_gc():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def _freed_after_step(name, kw, undo=False):
    build, batch, _, _ = C.MODELS[name]
    model = build()
    report = apply_unswag_surgery(model, **kw)
    assert report.patched, report
    if "long_context" in kw:
        reserve_host_memory(model, 64)
    batch(model).backward()
    if undo:
        assert remove_unswag_surgery(model)
        batch(model).backward()
    ref = weakref.ref(model)
    del model, report
    return ref() is None


@pytest.mark.parametrize("mode", list(MODES))
def test_patched_model_is_freed_without_the_cyclic_collector(mode, no_cyclic_gc):
    name, kw = MODES[mode]
    assert _freed_after_step(name, kw)


def test_unpatched_model_is_freed_too(no_cyclic_gc):
    """The premise: the test models themselves make no cycle (else the checks above
    would fail for reasons not the surgery's)."""
    build, batch, _, _ = C.MODELS["llama"]
    model = build()
    batch(model).backward()
    ref = weakref.ref(model)
    del model
    assert ref() is None


def test_model_is_freed_after_remove_unswag_surgery(no_cyclic_gc):
    assert _freed_after_step("llama", {"gated": "recompute", "lm_loss": "chunked"}, undo=True)

"""apply_unswag_surgery: argument checking and stale state."""
import warnings

import pytest

torch = pytest.importorskip("torch")
import conftest as C
from unswag import apply_unswag_surgery, remove_unswag_surgery


def _mlp():
    n = torch.nn
    torch.manual_seed(0)
    return n.Sequential(n.Linear(8, 16), n.SiLU(), n.Linear(16, 4))


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(tile_tokens=0), ValueError, "positive"),
    (dict(tile_tokens=-1), ValueError, "positive"),
    (dict(tile_tokens=2.5), TypeError, "int"),
    (dict(tile_tokens=True), TypeError, "int"),
    (dict(tile_tokens="64"), TypeError, "int"),
    (dict(bits=2.0), TypeError, "int"),
    (dict(bits=True), TypeError, "int"),
    (dict(bits=3), ValueError, "bits"),
    (dict(attention="bogus"), ValueError, "attention"),
    (dict(attention=1), TypeError, "attention"),
    (dict(gated="lazy"), ValueError, "gated"),
    (dict(lm_loss="full"), ValueError, "lm_loss"),
    (dict(activations="yes"), TypeError, "activations"),
])
def test_bad_arguments_rejected(kw, exc, msg):
    m = _mlp()
    with pytest.raises(exc, match=msg):
        apply_unswag_surgery(m, **kw)
    assert type(m[1]) is torch.nn.SiLU  # nothing patched


@pytest.mark.parametrize("model", [{}, "gpt2", None, 3])
def test_model_must_be_a_module(model):
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        apply_unswag_surgery(model)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        remove_unswag_surgery(model)


def test_numpy_style_ints_accepted():
    np = pytest.importorskip("numpy")
    rep = apply_unswag_surgery(_mlp(), bits=np.int64(4), tile_tokens=np.int32(16))
    assert rep.options["bits"] == 4 and type(rep.options["bits"]) is int
    assert rep.counts() == {"silu 4 bit": 1}


@pytest.mark.skipif(not C.HAVE_TRANSFORMERS, reason="transformers not installed")
def test_meta_then_to_empty_is_redone_with_a_warning():
    build, batch, _, _ = C.MODELS["llama"]
    ref = build()
    with torch.device("meta"):
        m = build()
    rep0 = apply_unswag_surgery(m)
    assert not rep0.patched and any("meta" in why for _, why in rep0.left_alone)
    m.to_empty(device="cpu")
    m.load_state_dict(ref.state_dict())
    with torch.no_grad():  # non-persistent buffers (rope's inv_freq) are not in the state
        for (_, b), (_, rb) in zip(m.named_buffers(), ref.named_buffers()):  # dict: to_empty
            b.copy_(rb)  # left them uninitialised
    with pytest.warns(UserWarning, match="changed since the last surgery"):
        rep1 = apply_unswag_surgery(m)
    assert rep1 is not rep0 and rep1.counts() == {"gated silu fused": 2}
    l0, _g0 = C.run_step(ref, batch)
    l1, _g1 = C.run_step(m, batch)
    assert abs(l0.item() - l1.item()) <= 1e-5 * abs(l0.item())
    # unchanged since: the same report, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert apply_unswag_surgery(m) is rep1


def test_training_steps_do_not_count_as_stale():
    m = _mlp()
    rep = apply_unswag_surgery(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.randn(3, 8)).sum().backward()
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert apply_unswag_surgery(m) is rep

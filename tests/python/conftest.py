"""Shared helpers for the Python tests: tiny random-weight models (no downloads),
saved-for-backward byte counting, gradient comparison, the GPU bench scripts as modules."""
from __future__ import annotations

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAVE_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def load_bench(name):
    """bench/gpu/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", "gpu",
                                                                      name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="torch not installed")
    for it in items:
        if "test_torch_" in it.nodeid and not HAVE_TORCH:
            it.add_marker(skip)


if HAVE_TORCH:
    import torch

    SEQ = 16
    VOCAB = 128

    def saved_bytes(fn):
        """Run fn() (a forward building a graph) and count the bytes autograd keeps for
        backward: unique storages, parameters excluded.  Returns (bytes, result)."""
        seen = {}

        def pack(t):
            try:
                st = t.untyped_storage()
                seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
            except Exception:
                pass
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn()
        return seen, out

    def activation_bytes(model, fn):
        seen, out = saved_bytes(fn)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
        return sum(n for p, n in seen.items() if p not in params), out

    def grads(model):
        return {n: p.grad.detach().clone() for n, p in model.named_parameters()
                if p.grad is not None}

    def run_step(model, batch_fn, seed=0):
        """Loss and every parameter gradient of one step (deterministic RNG)."""
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        loss = batch_fn(model)
        loss.backward()
        return loss.detach().clone(), grads(model)

    def checkpointing_enable(model, kwargs=None):
        """Hugging Face checkpointing under its current name (the old one warns there)."""
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def rel_err(a, b, floor=1e-30):
        """||a - b|| / max(||b||, floor)."""
        a, b = a.double(), b.double()
        return ((a - b).norm() / b.norm().clamp_min(floor)).item()

    def grad_floor(g):
        """Norm floor for relative errors: 1e-5 of the largest gradient norm (some gradients,
        e.g. of attention key biases, are zero in exact arithmetic and pure rounding noise)."""
        return 1e-5 * max(v.double().norm().item() for v in g.values())

    # ---- model zoo -----------------------------------------------------------------------

    def _lm_batch(model):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, VOCAB, (2, SEQ), generator=g)
        return model(input_ids=ids, labels=ids).loss

    def _img_batch_hf(model):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (2,), generator=g)
        return model(pixel_values=x, labels=y).loss

    def _img_batch_tv(model):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (2,), generator=g)
        return torch.nn.functional.cross_entropy(model(x), y)

    def _hf(cls_name, cfg_name, **kw):
        def build():
            import transformers as T
            torch.manual_seed(0)
            cfg = getattr(T, cfg_name)(**kw)
            m = getattr(T, cls_name)._from_config(cfg, attn_implementation="eager")
            return m.float().train()
        return build

    _DEC = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    _ENC = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                max_position_embeddings=64, pad_token_id=0)

    # name -> (builder, batch fn, kind, needs)
    MODELS = {
        "llama": (_hf("LlamaForCausalLM", "LlamaConfig", **_DEC), _lm_batch, "gated", "tf"),
        "mistral": (_hf("MistralForCausalLM", "MistralConfig", **_DEC), _lm_batch, "gated", "tf"),
        "qwen2": (_hf("Qwen2ForCausalLM", "Qwen2Config", **_DEC), _lm_batch, "gated", "tf"),
        "gemma": (_hf("GemmaForCausalLM", "GemmaConfig", head_dim=16,
                      hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh",
                      **_DEC), _lm_batch, "gated", "tf"),
        "gemma2": (_hf("Gemma2ForCausalLM", "Gemma2Config", head_dim=16,
                       hidden_activation="gelu_pytorch_tanh", sliding_window=8, **_DEC),
                   _lm_batch, "gated", "tf"),
        "gpt2": (_hf("GPT2LMHeadModel", "GPT2Config", n_embd=64, n_layer=2, n_head=4,
                     vocab_size=VOCAB, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=1, eos_token_id=2),
                 _lm_batch, "kbit", "tf"),
        "bert": (_hf("BertForMaskedLM", "BertConfig", **_ENC), _lm_batch, "kbit", "tf"),
        "roberta": (_hf("RobertaForMaskedLM", "RobertaConfig",
                        **{**_ENC, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}),
                    _lm_batch, "kbit", "tf"),
        "vit": (_hf("ViTForImageClassification", "ViTConfig", image_size=32, patch_size=8,
                    hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, num_labels=10, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0), _img_batch_hf, "kbit", "tf"),
    }

    def _tv(name):
        def build():
            import torchvision
            torch.manual_seed(0)
            return getattr(torchvision.models, name)(num_classes=10).float().train()
        return build

    MODELS.update({
        "resnet18": (_tv("resnet18"), _img_batch_tv, "exact", "tv"),
        "mobilenet_v2": (_tv("mobilenet_v2"), _img_batch_tv, "exact", "tv"),
    })

    def _mixed():
        n = torch.nn
        torch.manual_seed(0)
        return n.Sequential(n.Flatten(), n.Linear(3 * 32 * 32, 64), n.ReLU(), n.Linear(64, 64),
                            n.LeakyReLU(0.1), n.Linear(64, 64), n.ReLU6(), n.Linear(64, 64),
                            n.Hardtanh(-0.5, 0.5), n.Linear(64, 64), n.SiLU(),
                            n.Linear(64, 64), n.GELU(), n.Linear(64, 64),
                            n.GELU(approximate="tanh"), n.Linear(64, 10)).train()

    MODELS["mixed"] = (_mixed, _img_batch_tv, "kbit", None)

    def model_params(kinds=None):
        out = []
        for name, (_, _, kind, needs) in MODELS.items():
            if kinds is not None and kind not in kinds:
                continue
            marks = []
            if needs == "tf" and not HAVE_TRANSFORMERS:
                marks.append(pytest.mark.skip(reason="transformers not installed"))
            if needs == "tv" and not HAVE_TORCHVISION:
                marks.append(pytest.mark.skip(reason="torchvision not installed"))
            out.append(pytest.param(name, marks=marks, id=name))
        return out

#!/usr/bin/env python3
"""PyTorch quick start: patch a small Llama (random weights, no download) and train a few steps.

    pip install . torch transformers
    python examples/torch_quickstart.py
"""
import torch
import transformers as T

import unswag.torch as ut
from unswag import apply_unswag_surgery, remove_unswag_surgery

# 1. single ops: exact forward, a k-bit code kept for backward
x = torch.randn(4, 8, requires_grad=True)
y = ut.gelu(x, bits=2) + ut.relu(x)          # relu: exact with 1 bit
y.sum().backward()

# 2. a whole model
cfg = T.LlamaConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=256)
torch.manual_seed(0)
model = T.LlamaForCausalLM(cfg)
report = apply_unswag_surgery(model, gated="fused")   # or gated="recompute"
print(report)
# current transformers call it activation_checkpointing_enable (gradient_checkpointing_enable
# is its deprecated alias there); older releases have only the old name
(getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()

opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(0, cfg.vocab_size, (2, 64))
for step in range(5):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    print(f"step {step}: loss {loss.item():.4f}")

remove_unswag_surgery(model)   # back to the original modules, exactly

#!/usr/bin/env python3
"""Long-context training on the GPUs of one host: one sequence split across them
(sequence parallelism of the long-context mode) and the weights sharded by FSDP2.

    torchrun --standalone --nproc-per-node 2 examples/long_context_multi_gpu.py --tokens 1048576

Random weights of the TinyLlama-1.1B shape (no download), bf16, a few AdamW steps on one
random sequence of --tokens tokens; every rank prints each step's loss (the whole
sequence's, the same on every rank), time and peak GPU memory.  Measured by the benchmark
(forward + backward, no optimizer; bench/results/gpu-multi-gpu-16g-sp-1m-h200x2-2026-11-30.txt):
on 2 H200s a step of 1,048,576 tokens took 415 s with 12.2 GiB peak and 89 GiB of pinned
host memory per GPU.  This script itself has run on CPUs only (CI); AdamW's state adds
about 2 GiB per GPU here (bf16, sharded over 2 GPUs).
The GPU count must divide the model's KV heads (4 here) and --tokens.
``--device cpu --tiny`` runs a tiny model over gloo (what CI runs).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import transformers as T
from torch.distributed.fsdp import fully_shard

from unswag import apply_unswag_surgery
from unswag.torch.long_context import LongContextConfig, split_sequence

TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, vocab_size=32000)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=256)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=131072, help="the whole sequence")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny model (smoke test)")
    ap.add_argument("--chunk-tokens", type=int, default=0, help="0: the mode's default")
    a = ap.parse_args()

    if a.device == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo")
    rank = dist.get_rank()

    cfg = T.LlamaConfig(**(TINY if a.tiny else TINYLLAMA), rms_norm_eps=1e-5,
                        max_position_embeddings=max(a.tokens, 2048))
    torch.manual_seed(0)  # the same initial weights on every rank
    dtype = torch.float32 if a.device == "cpu" else torch.bfloat16
    with dev:
        model = T.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                torch_dtype=dtype)
    model.train()

    # the surgery first (the long-context mode, told which ranks share a sequence) ...
    lc = dict(chunk_tokens=a.chunk_tokens) if a.chunk_tokens else {}
    apply_unswag_surgery(model, long_context=LongContextConfig(
        sequence_parallel=dist.group.WORLD, **lc))
    # ... then FSDP2 over the same ranks
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    g = torch.Generator().manual_seed(1)  # the same sequence on every rank
    ids = torch.randint(0, cfg.vocab_size, (1, a.tokens), generator=g).to(dev)
    batch = split_sequence(ids, ids)  # this rank's slice; labels shifted over the whole
    for step in range(a.steps):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        took = time.perf_counter() - t0
        peak = (f", peak {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
                if dev.type == "cuda" else "")
        # One write per line: print() writes text and newline separately, and two ranks
        # sharing one pipe could interleave between them.
        sys.stdout.write(f"rank {rank} step {step}: loss {loss.item():.4f}, {took:.1f} s{peak}\n")
        sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

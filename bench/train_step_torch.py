#!/usr/bin/env python3
"""PyTorch eager reference for `grin bench train-step`: the same model
(transformers' LlamaForCausalLM built from the same config.json, random
weights), the same batch and sequence length, the same thread count; one
forward + backward + AdamW step, timed over N steps after warm-up.

    .venv-ref/bin/python bench/train_step_torch.py MODEL_DIR --batch 8 --seq-len 64 --threads 2
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = (torch.arange(a.batch * a.seq_len, dtype=torch.long) * 2654435761 % cfg.vocab_size).reshape(a.batch, a.seq_len)

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    secs = time.perf_counter() - t0
    tokens = a.batch * a.seq_len * a.steps
    print(json.dumps({
        "impl": "pytorch-eager", "torch": torch.__version__, "threads": a.threads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": a.batch, "seq_len": a.seq_len, "steps": a.steps, "seconds": secs,
        "step_ms": secs * 1000 / a.steps, "tokens_per_s": tokens / secs, "final_loss": loss,
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch eager reference for `grin bench train-step`: the same model
(transformers' LlamaForCausalLM built from the same config.json, random
weights), the same batch and sequence length, the same thread count; one
forward + backward + AdamW step (or, with --grad-only, forward + backward
with gradients summed over steps, as GRIN's saliency stage does), timed over
N steps after warm-up.

With --reference a frozen copy of the model is kept and run on every batch
(what a dense NPO / KL fine-tune holds), so the peak resident memory is that
of a classic dense unlearning step.

    python bench/train_step_torch.py MODEL_DIR --batch 8 --seq-len 64 --threads 2

Prints one JSON object. Memory figures are from /proc/self/status (Linux):
`rss_before_model_bytes` after importing torch, `peak_rss_bytes` the
high-water mark at the end.
"""
import argparse
import copy
import json
import os
import time


def rss():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grad-only", action="store_true")
    ap.add_argument("--reference", action="store_true")
    a = ap.parse_args()

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(a.threads))
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(a.model)
    rss_before, _ = rss()
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    model.train()
    params = list(model.parameters())
    weights_bytes = sum(p.numel() * p.element_size() for p in params)
    reference = None
    if a.reference:
        reference = copy.deepcopy(model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
    opt = None if a.grad_only else torch.optim.AdamW(params, lr=1e-5)
    ids = (torch.arange(a.batch * a.seq_len, dtype=torch.long) * 2654435761 % cfg.vocab_size).reshape(
        a.batch, a.seq_len
    )

    def step():
        if reference is not None:
            with torch.no_grad():
                reference(input_ids=ids)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return out.loss.item()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    secs = time.perf_counter() - t0
    _, peak = rss()
    tokens = a.batch * a.seq_len * a.steps
    print(json.dumps({
        "impl": "pytorch-eager", "torch": torch.__version__, "threads": a.threads,
        "mode": "forward+backward" if a.grad_only else "forward+backward+adamw",
        "reference_model": a.reference,
        "parameters": sum(p.numel() for p in params),
        "batch": a.batch, "seq_len": a.seq_len, "steps": a.steps, "seconds": secs,
        "step_ms": secs * 1000 / a.steps, "tokens_per_s": tokens / secs, "final_loss": loss,
        "weights_bytes": weights_bytes, "rss_before_model_bytes": rss_before, "peak_rss_bytes": peak,
        "peak_over_weights": (peak - rss_before) / weights_bytes,
    }))


if __name__ == "__main__":
    main()

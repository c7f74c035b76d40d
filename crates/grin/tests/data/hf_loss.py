#!/usr/bin/env python3
"""Per-token NLL of a HF-layout checkpoint, computed with transformers.

Usage (from the repository root):

    .venv-ref/bin/python crates/grin/tests/data/hf_loss.py MODEL_DIR TOKENS_JSON

MODEL_DIR   any directory AutoModelForCausalLM.from_pretrained accepts
            (config.json + model.safetensors or sharded safetensors + index).
TOKENS_JSON {"input_ids": [[...], ...], "loss_mask": [[...], ...]}   (loss_mask optional)
            Rows may have different lengths (each row is run on its own, no padding).
            loss_mask row b may be either
              * len(input_ids[b]) long, aligned with input_ids: loss_mask[b][t+1] == 1 means
                the target input_ids[b][t+1] (predicted from position t) counts;
                loss_mask[b][0] is ignored; or
              * len(input_ids[b]) - 1 long, aligned with targets: loss_mask[b][t] == 1 means
                the target input_ids[b][t+1] counts.
            Without loss_mask every target counts.
            Use "-" to read the JSON from stdin.

Prints one JSON object on stdout:
    {"token_nll": [[...], ...],   # [B][len_b - 1], natural-log NLL of input_ids[b][t+1]
                                  # for every t (mask not applied here)
     "mean_nll": x,               # mean of token_nll over targets with loss_mask 1
                                  # (null if no target counts)
     "n_targets": n}
Computed in float32 on CPU with attn_implementation="eager".
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, tokens_path = sys.argv[1], sys.argv[2]
    data = json.load(sys.stdin if tokens_path == "-" else open(tokens_path))
    ids = data["input_ids"]
    mask = data.get("loss_mask")
    if mask is not None:
        assert len(mask) == len(ids), "loss_mask must have one row per input_ids row"
        for m, r in zip(mask, ids):
            assert len(m) in (len(r), len(r) - 1), "loss_mask row must be len(ids) or len(ids)-1 long"

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()

    all_nll, total, count = [], 0.0, 0
    with torch.no_grad():
        for b, row in enumerate(ids):
            if len(row) < 2:
                all_nll.append([])
                continue
            x = torch.tensor([row], dtype=torch.long)
            logits = model(input_ids=x).logits[0].float()
            nll = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction="none")
            vals = nll.tolist()
            all_nll.append(vals)
            if mask is None:
                m = [1] * len(vals)
            else:
                m = mask[b][1:] if len(mask[b]) == len(row) else mask[b]
            for t, v in enumerate(vals):
                if m[t]:
                    total += v
                    count += 1
    mean = total / count if count else None
    json.dump({"token_nll": all_nll, "mean_nll": mean, "n_targets": count}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

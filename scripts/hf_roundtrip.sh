#!/usr/bin/env bash
# Shows that a checkpoint written by `grin finetune` loads in Hugging Face
# transformers unchanged and gives the same per-token loss.
#
#   python3 -m venv .venv-ref && .venv-ref/bin/pip install -r crates/grin/tests/data/requirements-ref.txt
#   bash scripts/hf_roundtrip.sh [FIXTURE_DIR]
#
# FIXTURE_DIR defaults to data/tofu-mini (made by `grin fixture tofu-mini`).
set -euo pipefail
cd "$(dirname "$0")/.."
fx="${1:-data/tofu-mini}"
py="${PYTHON:-.venv-ref/bin/python}"
grin="${GRIN:-target/release/grin}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$grin" finetune --model "$fx/model" --data "$fx/data/forget01.jsonl" --out "$work/ft" --epochs 1 --lr 1e-4 >/dev/null
"$grin" score --model "$work/ft" --data "$fx/data/forget10.jsonl" --tokens-out "$work/tokens.json" >"$work/grin.json"
"$py" crates/grin/tests/data/hf_loss.py "$work/ft" "$work/tokens.json" >"$work/hf.json"
"$py" - "$work/grin.json" "$work/hf.json" "$work/tokens.json" <<'PY'
import json, sys
ours, theirs, tokens = (json.load(open(p)) for p in sys.argv[1:4])
# Compare the answer tokens (grin reports zero elsewhere: its loss mask).
worst = max(abs(a - b)
            for ra, rb, m in zip(ours["token_nll"], theirs["token_nll"], tokens["loss_mask"])
            for t, (a, b) in enumerate(zip(ra, rb)) if m[t + 1])
print(f"grin mean NLL {ours['mean_nll']:.6f}  transformers {theirs['mean_nll']:.6f}  "
      f"({ours['n_targets']} answer tokens); max |per-token difference| {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
PY

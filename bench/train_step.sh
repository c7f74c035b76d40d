#!/usr/bin/env bash
# grin vs PyTorch eager, one training step, same model / batch / threads.
#   bash bench/train_step.sh MODEL_DIR [BATCH] [SEQ_LEN] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model="$1"; batch="${2:-8}"; seq="${3:-64}"; threads="${4:-2}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  py=.venv-ref/bin/python
  [ -x "$py" ] || py=.venv-bench/bin/python   # made by bench/run.sh
fi
ours=$(GRIN_THREADS="$threads" target/release/grin bench train-step --model "$model" --batch "$batch" --seq-len "$seq" --steps 10 --json)
theirs=$("$py" bench/train_step_torch.py "$model" --batch "$batch" --seq-len "$seq" --threads "$threads")
"$py" - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"params {a['parameters']}  batch {a['batch']}x{a['seq_len']}  threads {a['threads']}")
print(f"grin    {a['tokens_per_s']:10.0f} tokens/s  ({a['step_ms']:.1f} ms/step)")
print(f"pytorch {b['tokens_per_s']:10.0f} tokens/s  ({b['step_ms']:.1f} ms/step)")
print(f"ratio grin/pytorch = {a['tokens_per_s'] / b['tokens_per_s']:.2f}")
PY

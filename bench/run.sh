#!/usr/bin/env bash
# Training speed and memory, grin against PyTorch eager, in one run on one
# machine (docs/benchmarks.md, "Training step speed" and "Memory"):
#
#   bash bench/run.sh            # THREADS=2 by default
#
# 1. the training step (forward + backward + AdamW) and the gradient pass of
#    the saliency stage (forward + backward, gradients summed), grin and
#    transformers' LlamaForCausalLM from the same config.json, same batch,
#    sequence length and thread count, on tofu-mini's model and on a
#    ~100M-parameter Llama with random weights (bench/llama-100m.json);
# 2. a whole GRIN job on tofu-mini: in-process stage times and peak memory
#    (`grin bench job`), and the `grin unlearn` command end to end
#    (evaluation and checkpoint included) under /usr/bin/time;
# 3. peak memory as a multiple of the weights' bytes: a GRIN job on the
#    100M model (a 4-row request; 40 rows; 40 rows in 4 gradient groups)
#    against a dense PyTorch AdamW fine-tune that keeps a reference model,
#    each at two batch sizes so the share of activations can be taken out.
#
# Needs: cargo, python3 (a virtual environment with torch and transformers
# is made in .venv-bench unless PYTHON names an interpreter that has them),
# and the tofu-mini fixture (built into data/tofu-mini when missing).
# Writes JSON results under target/bench/ and prints a Markdown summary.
# SPEED=0 reruns only the jobs and the memory comparison, and summarises
# them with the speed results an earlier run left in target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-2}"
speed="${SPEED:-1}"
out=target/bench
mkdir -p "$out"
[ "$speed" = 1 ] && rm -f "$out"/*-grin-*.json "$out"/*-torch-*.json
export GRIN_THREADS="$threads" RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"

cargo build --release -p grin-cli >&2
grin=target/release/grin

has_torch() { "$1" -c 'import torch, transformers' 2>/dev/null; }
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv-ref/bin/python ] && has_torch .venv-ref/bin/python; then
    py=.venv-ref/bin/python
  else
    if ! { [ -x .venv-bench/bin/python ] && has_torch .venv-bench/bin/python; }; then
      echo "creating .venv-bench (torch, transformers)" >&2
      python3 -m venv .venv-bench
      .venv-bench/bin/pip install --quiet -r bench/requirements.txt >&2
    fi
    py=.venv-bench/bin/python
  fi
fi

fixture=data/tofu-mini
if [ ! -f "$fixture/model/config.json" ]; then
  echo "building the tofu-mini fixture into $fixture" >&2
  "$grin" fixture tofu-mini --out "$fixture" >&2
fi
big="$out/llama-100m"
mkdir -p "$big"
cp bench/llama-100m.json "$big/config.json"
cp "$fixture/model/tokenizer.json" "$big/tokenizer.json"

# The machine may be shared (CI, other jobs): each comparison runs grin and
# PyTorch alternately, REPEAT rounds, and keeps each side's best round.
# PyTorch runs with OpenMP's default (spinning) wait policy and with
# OMP_WAIT_POLICY=PASSIVE, and its better figure is the baseline.
# name model-dir batch seq steps warmup rounds
cases=(
  "tofu-mini $fixture/model 8 64 10 2 ${REPEAT:-3}"
  "llama-100m $big 4 128 3 1 ${REPEAT_100M:-3}"
)
rows=()
for c in "${cases[@]}"; do
  read -r name dir batch seq steps warmup rounds <<<"$c"
  rows+=("$name step" "$name grad")
  [ "$speed" = 1 ] || continue
  random=""
  [ "$name" = llama-100m ] && random="--random"
  "$grin" bench ops --model "$dir" --batch "$batch" --seq-len "$seq" --json >"$out/$name-ops.json"
  for mode in step grad; do
    flag=""
    [ "$mode" = grad ] && flag="--grad-only"
    for r in $(seq "$rounds"); do
      echo "== $name $mode round $r" >&2
      "$grin" bench train-step --model "$dir" $random $flag --batch "$batch" --seq-len "$seq" \
        --steps "$steps" --warmup "$warmup" --json >"$out/$name-$mode-grin-$r.json"
      for policy in default passive; do
        env_policy=()
        [ "$policy" = passive ] && env_policy=(OMP_WAIT_POLICY=PASSIVE)
        env "${env_policy[@]}" "$py" bench/train_step_torch.py "$dir" $flag --batch "$batch" --seq-len "$seq" \
          --steps "$steps" --warmup "$warmup" --threads "$threads" >"$out/$name-$mode-torch-$policy-$r.json"
      done
    done
  done
done

echo "== GRIN job on tofu-mini (in-process)" >&2
"$grin" bench job --model "$fixture/model" --forget "$fixture/data/forget10.jsonl" \
  --retain "$fixture/data/retain90.jsonl" --json >"$out/job-tofu-mini.json"

echo "== GRIN job on tofu-mini (grin unlearn, evaluation and save included)" >&2
rm -rf "$out/unlearned-tofu-mini"
/usr/bin/time -v "$grin" unlearn --model "$fixture/model" --forget "$fixture/data/forget10.jsonl" \
  --retain "$fixture/data/retain90.jsonl" --holdout "$fixture/data/holdout.jsonl" \
  --oracle "$fixture/oracle" --out "$out/unlearned-tofu-mini" >"$out/unlearn-cli.txt" 2>"$out/unlearn-cli.time"

# Memory of a GRIN job on the 100M model, each case at two batch sizes:
# activations grow with the batch and the rest does not, so 2 p(b) - p(2b)
# is the peak without activations. "request": one small deletion request
# (4 rows, one selection batch); "forget10": 40 rows, several batches;
# "forget10-groups4": the same with the tensors scored in 4 groups
# (selection.gradient_groups).
head -n 4 "$fixture/data/forget10.jsonl" >"$out/forget-request.jsonl"
for case in "request $out/forget-request.jsonl 1" "forget10 $fixture/data/forget10.jsonl 1" \
  "forget10-groups4 $fixture/data/forget10.jsonl 4"; do
  read -r name forget groups <<<"$case"
  for half in 0 1; do
    sel=8 ft=4 tag=""
    [ "$half" = 1 ] && sel=4 ft=2 tag="-half"
    echo "== GRIN job on llama-100m, $name, batches $sel / $ft (random weights, memory)" >&2
    cat >"$out/job-100m-$name$tag.cfg.json" <<JSON
{"selection": {"batch_size": $sel, "max_retain_examples": 32, "gradient_groups": $groups},
 "finetune": {"max_steps": 4, "batch_size": $ft, "early_stop": null}}
JSON
    "$grin" bench job --model "$big" --random --forget "$forget" --retain "$fixture/data/retain90.jsonl" \
      --config "$out/job-100m-$name$tag.cfg.json" --json >"$out/job-100m-$name$tag.json"
  done
done

echo "== PyTorch dense AdamW fine-tune with a reference model on llama-100m (memory)" >&2
for b in 4 2; do
  "$py" bench/train_step_torch.py "$big" --reference --batch "$b" --seq-len 64 --steps 2 --warmup 1 \
    --threads "$threads" >"$out/torch-dense-100m-b$b.json"
done

"$py" - "$out" "$threads" "${rows[@]}" <<'PY'
import glob, json, os, platform, re, sys, datetime
out, threads, rows = sys.argv[1], sys.argv[2], sys.argv[3:]
load = lambda name: json.load(open(os.path.join(out, name)))
best = lambda pattern: max((json.load(open(f)) for f in glob.glob(os.path.join(out, pattern))),
                           key=lambda d: d["tokens_per_s"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
load1 = os.getloadavg()[0]
t0 = best(rows[0].replace(" ", "-") + "-torch-*.json")
print(f"Measured {datetime.date.today()} on {os.cpu_count()} x {cpu}, {threads} threads, torch {t0['torch']}, "
      f"load average at the end {load1:.1f}\n")
print("| model | stage | batch | grin tokens/s | PyTorch eager tokens/s | grin / PyTorch |")
print("|---|---|---|---|---|---|")
for r in rows:
    name, mode = r.split()
    a, b = best(f"{name}-{mode}-grin-*.json"), best(f"{name}-{mode}-torch-*.json")
    stage = "train step (fwd+bwd+AdamW)" if mode == "step" else "gradient pass (fwd+bwd)"
    print(f"| {name} ({a['parameters']:,} params) | {stage} | {a['batch']}x{a['seq_len']} | "
          f"{a['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} | **{a['tokens_per_s'] / b['tokens_per_s']:.2f}** |")
print()
for name in ("tofu-mini", "llama-100m"):
    o = load(f"{name}-ops.json")
    print(f"fused vs composed ops, {name} shapes, batch {o['batch']}x{o['seq_len']} (forward + backward, ms):")
    print("| op | composed | fused | speedup |\n|---|---|---|---|")
    for r in o["ops"]:
        print(f"| {r['op']} | {r['composed_ms']:.3f} | {r['fused_ms']:.3f} | {r['speedup']:.2f}x |")
    print()
def job_line(name):
    j = load(name)
    t = j["timings"]
    print(f"{name}: {j['parameters']:,} params, {j['forget_examples']} forget / {j['retain_examples']} retain rows, "
          f"{j['seconds']:.1f} s in-process "
          f"(selection {t.get('selection', 0):.1f} s, reference {t.get('reference', 0):.1f} s, "
          f"noise {t.get('noise', 0):.2f} s, finetune {t.get('finetune', 0):.1f} s, {j['finetune_steps']} steps); "
          f"weights {j['weights_bytes'] / 1e6:.1f} MB, scored {j['scored_fraction']:.3f} of them, "
          f"peak RSS {j['peak_rss_bytes'] / 1e6:.1f} MB "
          f"(process before the model {j['rss_before_model_bytes'] / 1e6:.1f} MB) = "
          f"{j['peak_over_weights']:.2f} x weights above the process baseline")
    return j
job_line("job-tofu-mini.json")
for case in ("request", "forget10", "forget10-groups4"):
    full, half = job_line(f"job-100m-{case}.json"), job_line(f"job-100m-{case}-half.json")
    halves = {s["stage"]: s for s in half["stages"]}
    print(f"| stage (llama-100m, {case}) | x weights, batches 8 / 4 | x weights, batches 4 / 2 | "
          f"without activations (2 p(b) - p(2b)) |\n|---|---|---|---|")
    for s in full["stages"]:
        h = halves.get(s["stage"])
        if h is None:
            continue
        print(f"| {s['stage']} | {s['peak_over_weights']:.2f} | {h['peak_over_weights']:.2f} | "
              f"**{2 * h['peak_over_weights'] - s['peak_over_weights']:.2f}** |")
    print()
t = open(os.path.join(out, "unlearn-cli.time")).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", t)
peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)
print(f"grin unlearn on tofu-mini (selection, noise, fine-tune, evaluation before/after, save): "
      f"{wall.group(1) if wall else '?'} wall, peak RSS {int(peak.group(1)) / 1e3 if peak else 0:.1f} MB")
d, h = load("torch-dense-100m-b4.json"), load("torch-dense-100m-b2.json")
print(f"PyTorch dense AdamW + reference model, llama-100m, batch {d['batch']}x{d['seq_len']}: "
      f"weights {d['weights_bytes'] / 1e6:.1f} MB, peak RSS {d['peak_rss_bytes'] / 1e6:.1f} MB "
      f"(after import {d['rss_before_model_bytes'] / 1e6:.1f} MB) = {d['peak_over_weights']:.2f} x weights above the baseline; "
      f"batch {h['batch']}: {h['peak_over_weights']:.2f} x; without activations "
      f"{2 * h['peak_over_weights'] - d['peak_over_weights']:.2f} x")
PY

#!/usr/bin/env python3
"""Generate tiny reference checkpoints + reference logits for grin's model tests.

How to run (from the repository root):

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install -r crates/grin/tests/data/requirements-ref.txt
    .venv-ref/bin/python crates/grin/tests/data/make_model_refs.py

The script is deterministic (fixed seeds, CPU, float32, eager attention) and
rerunnable: it deletes and rewrites crates/grin/tests/data/models/<case>/.

For every case it
  1. builds a randomly initialised HF model from a config (initializer_range 0.2,
     and RMSNorm weights / biases perturbed away from 1 / 0 so that a loader that
     ignores them gives different logits),
  2. saves it with save_pretrained (safetensors) and rewrites config.json in the
     classic "transformers 4.x / Hub" layout (rope_theta + rope_scaling,
     torch_dtype) that real checkpoints use; the config exactly as written by
     the installed transformers is kept next to it as config.hf_native.json,
  3. reloads the directory with AutoModelForCausalLM.from_pretrained (so the
     rewritten config.json is proven to mean the same model) and computes
     logits [2,12,V] and token_nll [2,11] for a fixed seeded batch,
  4. cross-checks those logits against an independent float64 numpy
     implementation of the decoder (below), which also documents the exact
     semantics (RoPE pairing, llama3 rope scaling, GQA, sliding window),
  5. writes reference.json.
"""

import inspect
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
BATCH, SEQ = 2, 12
ATTN = "eager"

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    max_position_embeddings=64,
    initializer_range=0.2,
    bos_token_id=1,
    eos_token_id=2,
)

LLAMA2 = dict(
    COMMON,
    num_attention_heads=4,
    num_key_value_heads=4,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)

# llama3 rope scaling for head_dim 8, rope_theta 5e5:
#   inv_freq = [1, 3.76e-2, 1.41e-3, 5.32e-5]  -> wavelen = [6.28, 167, 4443, 1.18e5]
#   with original_max_position_embeddings 32, low_freq_factor 0.125,
#   high_freq_factor 4: high_freq_wavelen = 8, low_freq_wavelen = 256, so
#   freq 0 is unchanged, freq 1 is smoothed (medium band), freq 2,3 are /factor.
#   All three branches of the llama3 rule are exercised.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 0.125,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}

CASES = [
    dict(
        name="llama2_untied",
        cls=(LlamaConfig, LlamaForCausalLM),
        cfg=dict(LLAMA2),
        seed=1,
        desc="Llama-2 style: MHA (4 heads, 4 kv heads), untied lm_head, rope_theta 1e4.",
    ),
    dict(
        name="llama3_gqa_tied",
        cls=(LlamaConfig, LlamaForCausalLM),
        cfg=dict(
            COMMON,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=500000.0,
            rope_scaling=dict(LLAMA3_ROPE),
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
        ),
        seed=2,
        desc="Llama-3.x style: GQA (4 heads, 2 kv heads), tied embeddings (no lm_head.weight "
        "in the file), rope_theta 5e5, llama3 rope_scaling that changes 3 of the 4 inv_freqs.",
    ),
    dict(
        name="mistral_gqa",
        cls=(MistralConfig, MistralForCausalLM),
        cfg=dict(
            COMMON,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            sliding_window=6,
        ),
        seed=3,
        desc="Mistral: GQA (4/2), untied, sliding_window 6 < seq len 12. Query i attends keys j "
        "with i-6 < j <= i (i.e. itself and the 5 previous tokens).",
    ),
    dict(
        name="qwen2_bias",
        cls=(Qwen2Config, Qwen2ForCausalLM),
        cfg=dict(
            COMMON,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
        ),
        # written into the classic config.json (like real Qwen2 checkpoints, which carry a
        # sliding_window value that is ignored because use_sliding_window is false)
        legacy_extra=dict(sliding_window=4, max_window_layers=2),
        seed=4,
        desc="Qwen2: q/k/v projections with bias, o_proj without; GQA (4/2), tied, rope_theta 1e6, "
        "rms_norm_eps 1e-6. config.json says sliding_window 4 but use_sliding_window false: the "
        "window must NOT be applied.",
    ),
    dict(
        name="llama2_sharded",
        cls=(LlamaConfig, LlamaForCausalLM),
        cfg=dict(LLAMA2),
        seed=5,
        max_shard_size="40KB",
        desc="Same config as llama2_untied, different seed, saved in several safetensors shards "
        "with model.safetensors.index.json.",
    ),
    dict(
        name="llama_head_dim",
        cls=(LlamaConfig, LlamaForCausalLM),
        cfg=dict(
            COMMON,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=24,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        seed=6,
        desc="Llama with explicit head_dim 24 != hidden/heads (16): q_proj is [48,32], "
        "o_proj is [32,48]; attention scale 1/sqrt(24).",
    ),
]


def f32_list(t):
    """Nested list of python floats; each is the exact value of the float32 (repr round-trips)."""
    return np.asarray(t, dtype=np.float32).astype(np.float64).tolist()


# ----------------------------------------------------------------------------------------------
# Independent float64 numpy reference of the decoder (Llama / Mistral / Qwen2 families).
# ----------------------------------------------------------------------------------------------


def np_inv_freq(cfg, head_dim):
    theta = cfg["rope_theta"]
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        out = []
        for f in inv:
            wl = 2 * math.pi / f
            if wl < hi_wl:
                out.append(f)
            elif wl > lo_wl:
                out.append(f / factor)
            else:
                s = (old / wl - lo) / (hi - lo)
                out.append((1 - s) * f / factor + s * f)
        inv = np.array(out)
    elif rs:
        raise NotImplementedError(rs)
    return inv


def np_forward(model_dir, ids):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    if os.path.exists(os.path.join(model_dir, "model.safetensors")):
        w = load_file(os.path.join(model_dir, "model.safetensors"))
    else:
        idx = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))
        w = {}
        for f in sorted(set(idx["weight_map"].values())):
            w.update(load_file(os.path.join(model_dir, f)))
    w = {k: v.astype(np.float64) for k, v in w.items()}
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    window = cfg.get("sliding_window")
    if cfg["model_type"] == "qwen2" and not cfg.get("use_sliding_window", False):
        window = None
    inv = np_inv_freq(cfg, hd)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        return y

    B, T = ids.shape
    pos = np.arange(T, dtype=np.float64)
    ang = pos[:, None] * inv[None, :]  # [T, hd/2]
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)

    def rope(x):  # x [B, h, T, hd]; HF "rotate_half" pairing (i, i + hd/2)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        rot = np.concatenate([-x2, x1], -1)
        return x * cos + rot * sin

    qi = np.arange(T)[:, None]
    kj = np.arange(T)[None, :]
    allowed = kj <= qi
    if window is not None:
        allowed &= kj > qi - window

    x = w["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").reshape(B, T, nh, hd).transpose(0, 2, 1, 3)
        k = lin(h, p + "self_attn.k_proj").reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
        v = lin(h, p + "self_attn.v_proj").reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
        q, k = rope(q), rope(k)
        rep = nh // nkv  # query head i uses kv head i // rep
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        s = np.where(allowed, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(0, 2, 1, 3).reshape(B, T, nh * hd)
        x = x + lin(a, p + "self_attn.o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = lin(h, p + "mlp.gate_proj")
        u = lin(h, p + "mlp.up_proj")
        x = x + lin(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj")
    x = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight")
    if head is None:
        assert cfg.get("tie_word_embeddings", True), "lm_head.weight missing but embeddings untied"
        head = w["model.embed_tokens.weight"]
    return x @ head.T


# ----------------------------------------------------------------------------------------------


def legacy_config(native, case):
    """Rewrite a transformers-5 config dict into the classic Hub layout."""
    c = dict(native)
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp["rope_theta"]
    c["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else {
        k: v for k, v in rp.items() if k != "rope_theta"
    }
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    c.pop("layer_types", None)
    if "head_dim" not in case["cfg"]:
        c.pop("head_dim", None)
    c.update(case.get("legacy_extra", {}))
    return dict(sorted(c.items()))


def build(case):
    torch.manual_seed(case["seed"])
    cfg_cls, model_cls = case["cls"]
    cfg = cfg_cls(**case["cfg"], attn_implementation=ATTN)
    cfg.dtype = torch.float32
    model = model_cls(cfg).to(torch.float32)
    # Move norm weights away from 1 and biases away from 0 (HF inits them to 1 / 0).
    g = torch.Generator().manual_seed(1000 + case["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    model.eval()
    return cfg, model


def run_case(case):
    name = case["name"]
    out = os.path.join(MODELS, name)
    shutil.rmtree(out, ignore_errors=True)
    cfg, model = build(case)

    if name == "llama3_gqa_tied":
        hd = cfg.hidden_size // cfg.num_attention_heads
        base = 1.0 / cfg.rope_parameters["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)
        scaled = model.model.rotary_emb.inv_freq
        print(f"  inv_freq unscaled: {base.tolist()}")
        print(f"  inv_freq llama3  : {scaled.tolist()}")
        changed = int((~torch.isclose(base, scaled, rtol=1e-6, atol=0)).sum())
        print(f"  llama3 scaling changed {changed} of {hd // 2} inv_freqs")
        assert changed >= 2

    kw = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kw["safe_serialization"] = True
    if "max_shard_size" in case:
        kw["max_shard_size"] = case["max_shard_size"]
    model.save_pretrained(out, **kw)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    native_path = os.path.join(out, "config.json")
    native = json.load(open(native_path))
    os.replace(native_path, os.path.join(out, "config.hf_native.json"))
    with open(native_path, "w") as f:
        json.dump(legacy_config(native, case), f, indent=2)
        f.write("\n")

    files = sorted(os.listdir(out))
    if "max_shard_size" in case:
        shards = [f for f in files if f.startswith("model-") and f.endswith(".safetensors")]
        assert len(shards) >= 2 and "model.safetensors.index.json" in files, files
    if cfg.tie_word_embeddings:
        from safetensors import safe_open

        with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
            assert "lm_head.weight" not in f.keys()

    g = torch.Generator().manual_seed(12345 + case["seed"])
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=g)

    with torch.no_grad():
        logits_mem = model(input_ids=ids).logits.float()
        reloaded = AutoModelForCausalLM.from_pretrained(
            out, dtype=torch.float32, attn_implementation=ATTN
        ).eval()
        assert reloaded.config._attn_implementation == ATTN
        logits = reloaded(input_ids=ids).logits.float()
    d_reload = (logits - logits_mem).abs().max().item()
    assert d_reload == 0.0, f"reload from classic config.json changed logits by {d_reload}"

    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1), reduction="none"
    ).reshape(BATCH, SEQ - 1)

    ref = np_forward(out, ids.numpy())
    d_np = np.abs(ref - logits.numpy().astype(np.float64)).max()
    assert d_np < 1e-4, f"numpy reference disagrees with transformers: {d_np}"

    extra = {}
    if name == "mistral_gqa":
        # Show the window matters: without it the later positions change.
        with torch.no_grad():
            reloaded.config.sliding_window = None
            for layer in reloaded.model.layers:
                layer.self_attn.sliding_window = None
            nowin = reloaded(input_ids=ids).logits.float()
        diff = (nowin - logits).abs().amax(dim=(0, 2))
        print(f"  max |logit diff| per position without sliding window: {diff.tolist()}")
        assert diff[:6].max() == 0 and diff[6:].min() > 1e-3
        extra["sliding_window_semantics"] = "query i attends key j iff i-6 < j <= i"

    probs = torch.softmax(logits, -1)
    print(
        f"  files={files}\n  logits std={logits.std().item():.3f}  "
        f"max prob={probs.max().item():.3f}  mean nll={nll.mean().item():.4f} "
        f"(uniform={math.log(cfg.vocab_size):.4f})  |numpy-hf|={d_np:.2e}"
    )

    doc = {
        "case": name,
        "description": case["desc"],
        "input_ids": ids.tolist(),
        "token_nll": f32_list(nll),
        "mean_nll": float(np.float32(nll.mean().item())),
        "logits": f32_list(logits),
        "dtype": "float32",
        "attn_implementation": ATTN,
        "nll_definition": "token_nll[b][t] = cross_entropy(logits[b][t], input_ids[b][t+1]), natural log",
        "max_abs_diff_vs_numpy_float64_reference": float(d_np),
        **extra,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(doc, f)
        f.write("\n")


def main():
    torch.set_num_threads(1)  # bitwise reproducibility on CPU
    torch.use_deterministic_algorithms(True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    os.makedirs(MODELS, exist_ok=True)
    only = set(sys.argv[1:])
    for case in CASES:
        if only and case["name"] not in only:
            continue
        print(f"[{case['name']}]")
        run_case(case)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Two tiny RANDOM Llama causal LMs and their expected outputs, as test fixtures for
`crates/adept-backbones/tests/llama.rs`.

Regenerates (deterministic, seeded, CPU only, no downloads):

* tests/fixtures/tiny-llama-gqa-tied/    4 heads, 2 KV heads (grouped-query attention), tied
                                          embeddings (no lm_head.weight in the file), rope_theta 1e4
* tests/fixtures/tiny-llama-mha-untied/  4 heads, 4 KV heads, separate lm_head.weight, rope_theta 1e5
  each with config.json and model.safetensors written by `LlamaForCausalLM.save_pretrained`
  (transformers 5 writes rope_theta inside "rope_parameters"), and
* tests/fixtures/tiny-llama-expected.json  per model (key = folder name):
    "vocab_cols"         the logit columns stored (every 4th of the vocabulary, to keep the file small)
    "right" / "left"     a batch of 2 token sequences (lengths 7 and 4) right- and left-padded:
                         "input_ids", "attention_mask", and "logits": for each sequence, its attended rows
                         in order, each row the logits at vocab_cols. Computed with
                         position_ids = cumsum(mask) - 1 (padded positions filled with 1), as `generate` does.
    "embeds"             "inputs_embeds" [2, 5, d] (seeded random), left-padded "attention_mask", and the
                         attended rows' logits at vocab_cols (the adapter path: no token ids).
    "generate"           2 prompts (lengths 5 and 3), left-padded "input_ids"/"attention_mask", and the 8 new
                         tokens per row of `generate(do_sample=False, max_new_tokens=8)` with no EOS.
    "generate_eos"       the same prompts with an EOS id taken from row 0's tokens above: "eos" and
                         each row's new tokens up to and including its first EOS (HF pads after it).
                         "eos" is row 0's first generated token that differs from its first one.

Weights: transformers' init (N(0, 0.02)) makes every layer nearly linear and attention nearly uniform, a weak
test. After init every matrix is redrawn N(0, 0.15) from a seeded generator and every RMSNorm weight
1 + N(0, 0.1). Eager attention, float32.

Floats in JSON are f32 values written with the shortest decimal that round-trips to the same f32.

Usage: python3 tests/reference/tiny_llama.py [--out FIXTURES_DIR]
       python3 tests/reference/tiny_llama.py --bench   (writes nothing: times one forward + backward
       w.r.t. inputs_embeds of a random SmolLM2-135M-shaped LlamaForCausalLM at batch 8 x 64 on 2 threads,
       weights frozen, the head on the last 8 rows (logits_to_keep) and on all rows; the Rust side is
       the ignored test `timing_smollm2_shaped_train_step` in crates/adept-backbones/tests/llama.rs)
Needs: torch, transformers, safetensors.
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "fixtures")
SEED = 20250102
VOCAB = 96
HIDDEN = 32
INTER = 48
LAYERS = 2
HEADS = 4
COLS = list(range(0, VOCAB, 4))

MODELS = {
    "tiny-llama-gqa-tied": dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0),
    "tiny-llama-mha-untied": dict(num_key_value_heads=4, tie_word_embeddings=False, rope_theta=100000.0),
}



def nested(t):
    a = np.asarray(t, dtype=np.float32)
    if a.ndim == 1:
        return [float(repr_f32(v)) for v in a]
    return [nested(x) for x in a]


def repr_f32(v):
    # shortest decimal that round-trips to the same f32
    return np.format_float_positional(np.float32(v), unique=True, trim="-")


def positions(mask):
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def pad(seqs, left, pad_id=0):
    n = max(len(s) for s in seqs)
    ids, mask = [], []
    for s in seqs:
        p = n - len(s)
        if left:
            ids.append([pad_id] * p + s)
            mask.append([0] * p + [1] * len(s))
        else:
            ids.append(s + [pad_id] * p)
            mask.append([1] * len(s) + [0] * p)
    return torch.tensor(ids), torch.tensor(mask)


def attended_logits(logits, mask):
    out = []
    for b in range(logits.shape[0]):
        rows = [nested(logits[b, t, COLS]) for t in range(logits.shape[1]) if mask[b, t] == 1]
        out.append(rows)
    return out


def build(name, kw, gen):
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation="eager",
        **kw,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
    return model


def run(model, seqs, left):
    ids, mask = pad(seqs, left)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    return {
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "logits": attended_logits(logits, mask),
    }


def bench():
    import time

    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
        rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    m = LlamaForCausalLM(cfg).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    b, s, keep = 8, 64, 8
    for mode in ["keep8", "all"]:
        for _ in range(3):
            x = torch.randn(b, s, 576, requires_grad=True)
            mask = torch.ones(b, s, dtype=torch.long)
            t0, c0 = time.perf_counter(), time.process_time()
            kw = dict(logits_to_keep=keep) if mode == "keep8" else {}
            out = m(inputs_embeds=x, attention_mask=mask, **kw).logits
            t1 = time.perf_counter() - t0
            out.pow(2).mean().backward()
            print("%s: forward %.3fs, forward+backward %.3fs wall, %.2fs CPU" % (
                mode, t1, time.perf_counter() - t0, time.process_time() - c0), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--bench", action="store_true")
    args = ap.parse_args()
    if args.bench:
        return bench()
    torch.set_num_threads(1)
    expected = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "vocab_cols": COLS,
    }
    for i, (name, kw) in enumerate(MODELS.items()):
        gen = torch.Generator().manual_seed(SEED + i)
        model = build(name, kw, gen)
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        model.save_pretrained(folder, safe_serialization=True)
        for extra in ("generation_config.json",):
            p = os.path.join(folder, extra)
            if os.path.exists(p):
                os.remove(p)
        rng = np.random.default_rng(SEED + 10 + i)
        seqs = [rng.integers(3, VOCAB, size=7).tolist(), rng.integers(3, VOCAB, size=4).tolist()]
        entry = {"right": run(model, seqs, left=False), "left": run(model, seqs, left=True)}

        # inputs_embeds path, left padded
        emb = torch.from_numpy(rng.normal(0.0, 1.0, size=(2, 5, HIDDEN)).astype(np.float32))
        emask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
        with torch.no_grad():
            el = model(inputs_embeds=emb, attention_mask=emask, position_ids=positions(emask)).logits
        entry["embeds"] = {
            "inputs_embeds": nested(emb),
            "attention_mask": emask.tolist(),
            "logits": attended_logits(el, emask),
        }

        prompts = [rng.integers(3, VOCAB, size=5).tolist(), rng.integers(3, VOCAB, size=3).tolist()]
        ids, mask = pad(prompts, left=True)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1, max_new_tokens=8,
                min_new_tokens=0, eos_token_id=None, pad_token_id=0,
            )
        new = out[:, ids.shape[1]:].tolist()
        entry["generate"] = {
            "prompts": prompts,
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "new_tokens": new,
        }
        eos = next(t for t in new[0][1:] if t != new[0][0])  # row 0 stops mid-way
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1, max_new_tokens=8,
                min_new_tokens=0, eos_token_id=eos, pad_token_id=0,
            )
        rows = []
        for r in out[:, ids.shape[1]:].tolist():
            cut = r.index(eos) + 1 if eos in r else len(r)
            rows.append(r[:cut])
        entry["generate_eos"] = {"eos": eos, "new_tokens": rows}
        expected[name] = entry
    with open(os.path.join(args.out, "tiny-llama-expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()

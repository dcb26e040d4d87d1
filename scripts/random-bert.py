#!/usr/bin/env python3
"""Writes a BERT encoder folder (HF layout) of a chosen size with random weights, for timing.

The layout, the vocabulary and the tokenizer come from an existing BERT folder (`--like`, e.g.
all-MiniLM-L6-v2, whose vocabulary is bert-base-uncased's); the sizes from the flags (defaults:
BERT-base, 12 layers, d=768, 3072, 12 heads, ~110 M parameters). Weights ~ N(0, 0.02), LayerNorm
weights 1 and biases 0, seeded (`--seed`). Needs numpy and safetensors.
"""
import argparse, json, os, re, shutil

import numpy as np
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--like", required=True, help="a BERT folder (config.json, tokenizer.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--intermediate", type=int, default=3072)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.like, "config.json")))
    if cfg.get("model_type") != "bert":
        raise SystemExit(f"{a.like}/config.json: model_type is {cfg.get('model_type')!r}, not 'bert'")
    cfg.update(num_hidden_layers=a.layers, hidden_size=a.hidden, intermediate_size=a.intermediate,
               num_attention_heads=a.heads, _name_or_path="random-bert (scripts/random-bert.py)")
    d, f, v = a.hidden, a.intermediate, cfg["vocab_size"]
    rng = np.random.default_rng(a.seed)
    t = {}

    def w(name, *shape):
        t[name] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))

    def ln(prefix):
        t[prefix + ".weight"] = np.ones(d, np.float32)
        t[prefix + ".bias"] = np.zeros(d, np.float32)

    w("embeddings.word_embeddings.weight", v, d)
    w("embeddings.position_embeddings.weight", cfg["max_position_embeddings"], d)
    w("embeddings.token_type_embeddings.weight", cfg.get("type_vocab_size", 2), d)
    ln("embeddings.LayerNorm")
    for i in range(a.layers):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            w(p + f"attention.self.{m}.weight", d, d)
            t[p + f"attention.self.{m}.bias"] = np.zeros(d, np.float32)
        w(p + "attention.output.dense.weight", d, d)
        t[p + "attention.output.dense.bias"] = np.zeros(d, np.float32)
        ln(p + "attention.output.LayerNorm")
        w(p + "intermediate.dense.weight", f, d)
        t[p + "intermediate.dense.bias"] = np.zeros(f, np.float32)
        w(p + "output.dense.weight", d, f)
        t[p + "output.dense.bias"] = np.zeros(d, np.float32)
        ln(p + "output.LayerNorm")
    w("pooler.dense.weight", d, d)
    t["pooler.dense.bias"] = np.zeros(d, np.float32)
    os.makedirs(a.out, exist_ok=True)
    save_file(t, os.path.join(a.out, "model.safetensors"))
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    for name in os.listdir(a.like):
        if re.match(r"(tokenizer.*|vocab\.txt|special_tokens_map\.json)$", name):
            shutil.copy(os.path.join(a.like, name), a.out)
    n = sum(x.size for x in t.values())
    print(json.dumps({"out": a.out, "parameters": int(n), "layers": a.layers, "hidden": d}))


if __name__ == "__main__":
    main()

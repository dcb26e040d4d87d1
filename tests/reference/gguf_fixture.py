#!/usr/bin/env python3
"""A tiny llama GGUF and what it must read as, for `crates/adept-backbones/tests/gguf.rs`.

Writes (deterministic, seeded):
* `tests/fixtures/gguf/tiny-llama.gguf`: llama architecture metadata (1 layer, d 32, 4 heads of 8,
  2 KV heads, ffn 32, 32 tokens, untied output), a byte-level BPE tokenizer (`tokenizer.ggml.model`
  "gpt2": 32 tokens, a few merges, 3 control tokens and 1 user-defined token), and tensors in each of
  Q4_0, Q4_1, Q8_0, F16 and F32 (quantized with `gguf.quants.quantize`);
* `tests/fixtures/gguf/tiny-llama.expected.json`: for every tensor, its GGUF type, its torch-order
  shape and its reference dequantization (`gguf.quants.dequantize`, float32, flattened row-major);
  for q and k, the row order of the Hugging Face (un-permuted) tensor, computed by applying
  transformers' `LlamaTensorProcessor._reverse_permute_weights` (modeling_gguf_pytorch_utils.py)
  to the row indices (so `hf[i] = gguf[row_order[i]]`); the config transformers builds from the file
  (`AutoConfig.from_pretrained(..., gguf_file=...)`); and token ids transformers' GGUF tokenizer
  gives for a few texts.

Run once (needs gguf, numpy, transformers), then commit both files:
    python3 tests/reference/gguf_fixture.py
"""
import json
import pathlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "tests" / "fixtures" / "gguf"
GGUF_PATH = OUT_DIR / "tiny-llama.gguf"
EXPECTED_PATH = OUT_DIR / "tiny-llama.expected.json"

D, HEADS, KV_HEADS, FFN, LAYERS = 32, 4, 2, 32, 1
HEAD_DIM = D // HEADS

# 3 control tokens, one user-defined token, byte-level characters, then merged tokens.
TOKENS = (
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]
    + list("abdehlorwĠĊ!0123")
    + ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "Ġworl", "ld", "Ġh", "Ġhe", "01"]
)
TOKEN_TYPES = [3, 3, 3, 4] + [1] * (len(TOKENS) - 4)
MERGES = [
    "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "l d", "Ġ h", "Ġh e",
    "0 1",
]
assert len(TOKENS) == 32, len(TOKENS)
TEXTS = ["hello world!", "hello\nworld", "<|im_start|>hello<|im_end|>", "0123 hello", "<think>hw"]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def reverse_permute(weights, n_head, num_kv_heads=None):
    """transformers' LlamaTensorProcessor._reverse_permute_weights (modeling_gguf_pytorch_utils.py)."""
    if num_kv_heads is not None and n_head != num_kv_heads:
        n_head = num_kv_heads
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


def f32_list(a):
    """float32 values as the shortest decimals that read back as the same float32."""
    return [float(str(x)) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def main():
    rng = np.random.default_rng(20261201)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # name -> (torch-order shape, type)
    spec = {
        "token_embd.weight": ((len(TOKENS), D), T.Q8_0),
        "blk.0.attn_norm.weight": ((D,), T.F32),
        "blk.0.attn_q.weight": ((D, D), T.Q4_0),
        "blk.0.attn_k.weight": ((KV_HEADS * HEAD_DIM, D), T.Q4_1),
        "blk.0.attn_v.weight": ((KV_HEADS * HEAD_DIM, D), T.F16),
        "blk.0.attn_output.weight": ((D, D), T.Q8_0),
        "blk.0.ffn_norm.weight": ((D,), T.F32),
        "blk.0.ffn_gate.weight": ((FFN, D), T.Q4_1),
        "blk.0.ffn_up.weight": ((FFN, D), T.Q4_0),
        "blk.0.ffn_down.weight": ((D, FFN), T.F16),
        "output_norm.weight": ((D,), T.F32),
        "output.weight": ((len(TOKENS), D), T.F32),
    }
    w = gguf.GGUFWriter(str(GGUF_PATH), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(TOKENS))
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(TOKENS)
    w.add_token_types(TOKEN_TYPES)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    expected = {"tensors": {}}
    for name, (shape, qtype) in spec.items():
        x = rng.standard_normal(shape).astype(np.float32)
        if name.endswith("norm.weight"):
            x = 1.0 + 0.1 * x
        if qtype == T.F32:
            data, ref = x, x
        elif qtype == T.F16:
            data = x.astype(np.float16)
            ref = data.astype(np.float32)
        else:
            data = gguf.quants.quantize(x, qtype)
            ref = gguf.quants.dequantize(data, qtype).astype(np.float32)
            assert ref.shape == x.shape, (name, ref.shape)
        w.add_tensor(name, data, raw_dtype=qtype)
        entry = {"type": qtype.name, "shape": list(shape), "values": f32_list(ref)}
        if ".attn_q." in name or ".attn_k." in name:
            kv = HEADS if ".attn_q." in name else KV_HEADS
            order = reverse_permute(np.arange(shape[0]), HEADS, kv)
            entry["hf_row_order"] = [int(i) for i in order]
        expected["tensors"][name] = entry
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # What transformers makes of the file (config and tokenizer).
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(str(OUT_DIR), gguf_file=GGUF_PATH.name).to_dict()
    keep = [
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
        "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id",
        "pad_token_id", "hidden_act",
    ]
    expected["config"] = {k: cfg[k] for k in keep}
    expected["config"]["rope_theta"] = cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"]
    tok = AutoTokenizer.from_pretrained(str(OUT_DIR), gguf_file=GGUF_PATH.name)
    expected["tokenizer"] = {
        "texts": TEXTS,
        "ids": [tok(t, add_special_tokens=True)["input_ids"] for t in TEXTS],
        "special_tokens": sorted(t.content for t in tok.added_tokens_decoder.values() if t.special),
        "pre_tokenizer": json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"],
    }
    EXPECTED_PATH.write_text(json.dumps(expected, indent=None) + "\n")
    print(f"wrote {GGUF_PATH} ({GGUF_PATH.stat().st_size} bytes) and {EXPECTED_PATH} "
          f"({EXPECTED_PATH.stat().st_size} bytes)")
    print(json.dumps(expected["config"]), expected["tokenizer"]["ids"])


if __name__ == "__main__":
    main()

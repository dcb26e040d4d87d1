#!/usr/bin/env python3
"""A tiny decoder graph that satisfies the decoder bundle contract, for testing the runtime's
key/value-cache plumbing (`crates/adept-runtime/src/generate/tests.rs`).

Writes `tests/fixtures/tiny-decoder/`: `model.onnx`, `tokenizer.json`, `prompt_cache.safetensors`
and `expected.json` (greedy continuations and each step's last-row logits, computed here with
numpy from the full unpadded sequence, no cache). The graph is not a transformer, but it has the contract's interface and
the property the plumbing must preserve: the last row's logits depend on every attended row's
cached key and value, and on positions.

    x      = E[input_ids] + position_ids * w_pos                      [b, s, d]   (E: V + l rows)
    new_i  = reshape(x * a_i) -> [b, kv, s, hd]   (keys), x * c_i (values)
    present.i.key|value = concat(past.i.key|value, new_i, axis 2)
    ctx    = sum_i sum_t mask[b, t] * (present.i.key + present.i.value)[b, :, t, :] -> [b, d]
    logits = 3 * tanh(x + ctx) @ W                                    [b, s, V]

The soft prompt is E's last l rows (virtual ids V..V+l-1); the prompt cache holds their keys and
values at positions 0..l-1. Run once, then commit the folder:
    /tmp/torchenv/bin/python tests/reference/tiny_decoder.py [OUT_DIR]
"""
import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

OUT = (
    pathlib.Path(sys.argv[1])
    if len(sys.argv) > 1
    else pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "tiny-decoder"
)
OUT.mkdir(parents=True, exist_ok=True)

V, L, LAYERS, KV, HD = 40, 3, 2, 2, 4
D = KV * HD
rng = np.random.default_rng(0)
E = rng.normal(size=(V + L, D)).astype(np.float32)
W_POS = (rng.normal(size=(D,)) * 0.3).astype(np.float32)
W = rng.normal(size=(D, V)).astype(np.float32)
A = [0.15, -0.1]  # key scale per layer
C = [0.1, 0.12]  # value scale per layer

nodes, inits = [], []


def const(name, arr):
    inits.append(numpy_helper.from_array(np.asarray(arr), name))
    return name


const("E", E)
const("w_pos", W_POS)
const("W", W)
const("kvshape", np.array([0, 0, KV, HD], dtype=np.int64))
const("ctxshape", np.array([0, 1, D], dtype=np.int64))
const("ax13", np.array([1, 3], dtype=np.int64))
const("ax2", np.array([2], dtype=np.int64))
const("ax_last", np.array([-1], dtype=np.int64))
const("three", np.array(3.0, dtype=np.float32))
nodes += [
    helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
    helper.make_node("Cast", ["position_ids"], ["posf"], to=TensorProto.FLOAT),
    helper.make_node("Unsqueeze", ["posf", "ax_last"], ["pos3"]),
    helper.make_node("Mul", ["pos3", "w_pos"], ["posterm"]),
    helper.make_node("Add", ["emb", "posterm"], ["x"]),
    helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
    helper.make_node("Unsqueeze", ["maskf", "ax13"], ["mask4"]),
]
ctx_terms = []
for i in range(LAYERS):
    for kind, scale in (("key", A[i]), ("value", C[i])):
        s = const(f"s_{kind}_{i}", np.array(scale, dtype=np.float32))
        nodes += [
            helper.make_node("Mul", ["x", s], [f"x_{kind}_{i}"]),
            helper.make_node("Reshape", [f"x_{kind}_{i}", "kvshape"], [f"r_{kind}_{i}"]),
            helper.make_node("Transpose", [f"r_{kind}_{i}"], [f"new_{kind}_{i}"], perm=[0, 2, 1, 3]),
            helper.make_node(
                "Concat", [f"past_key_values.{i}.{kind}", f"new_{kind}_{i}"], [f"present.{i}.{kind}"], axis=2
            ),
            helper.make_node("Mul", [f"present.{i}.{kind}", "mask4"], [f"m_{kind}_{i}"]),
            helper.make_node("ReduceSum", [f"m_{kind}_{i}", "ax2"], [f"sum_{kind}_{i}"], keepdims=0),
        ]
        ctx_terms.append(f"sum_{kind}_{i}")
acc = ctx_terms[0]
for k, t in enumerate(ctx_terms[1:]):
    nodes.append(helper.make_node("Add", [acc, t], [f"acc{k}"]))
    acc = f"acc{k}"
nodes += [
    helper.make_node("Reshape", [acc, "ctxshape"], ["ctx"]),
    helper.make_node("Add", ["x", "ctx"], ["h0"]),
    helper.make_node("Tanh", ["h0"], ["h"]),
    helper.make_node("MatMul", ["h", "W"], ["l0"]),
    helper.make_node("Mul", ["l0", "three"], ["logits"]),
]
inputs = [
    helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
    helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
    helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
]
outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", V])]
for i in range(LAYERS):
    for kind in ("key", "value"):
        inputs.append(
            helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, ["batch", KV, "past", HD])
        )
        outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, ["batch", KV, "total", HD]))
graph = helper.make_graph(nodes, "tiny_decoder", inputs, outputs, inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="adept-tests")
model.ir_version = 9
onnx.checker.check_model(model)
onnx.save(model, OUT / "model.onnx")


def kv_rows(ids, positions):
    """Keys/values per layer [1, KV, n, HD] of tokens `ids` at `positions`."""
    x = E[ids] + np.asarray(positions, dtype=np.float32)[:, None] * W_POS
    out = {}
    for i in range(LAYERS):
        for kind, scale in (("key", A[i]), ("value", C[i])):
            out[f"past_key_values.{i}.{kind}"] = np.ascontiguousarray(
                (x * np.float32(scale)).reshape(len(ids), KV, HD).transpose(1, 0, 2)[None]
            ).astype(np.float32)
    return out


save_file(kv_rows(list(range(V, V + L)), list(range(L))), str(OUT / "prompt_cache.safetensors"))

vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
for t in range(3, V):
    vocab[f"w{t}"] = t
tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.add_special_tokens(["<pad>", "<s>", "</s>"])
tok.save(str(OUT / "tokenizer.json"))


def next_logits(seq):
    """Last-row logits for a full unpadded sequence [virtual prompt | bos | prompt | generated]."""
    pos = np.arange(len(seq), dtype=np.float32)
    x = E[seq] + pos[:, None] * W_POS
    scale = sum(A) + sum(C)
    ctx = (x * np.float32(scale)).sum(0)
    return (3.0 * np.tanh(x[-1] + ctx) @ W).astype(np.float32)


PROMPTS = ["w5 w7 w9", "w11", "w3 w4 w5 w6 w7 w30"]
MAX_NEW, BOS, EOS = 6, 1, [2]
cases = []
for p in PROMPTS:
    ids = [BOS] + [vocab[w] for w in p.split()]
    seq = list(range(V, V + L)) + ids
    gen, step_logits = [], []
    for _ in range(MAX_NEW):
        lg = next_logits(seq)
        t = int(np.argmax(lg))
        step_logits.append([float(v) for v in lg])
        gen.append(t)
        seq.append(t)
        if t in EOS:
            break
    cases.append({"prompt": p, "prompt_ids": ids, "generated": gen, "logits": step_logits})
(OUT / "expected.json").write_text(
    json.dumps(
        {
            "vocab_size": V, "prompt_len": L, "num_layers": LAYERS, "kv_heads": KV, "head_dim": HD,
            "bos_token_id": BOS, "eos_token_ids": EOS, "pad_token_id": 0, "max_new_tokens": MAX_NEW,
            "cases": cases,
        },
        indent=1,
    )
    + "\n"
)
print(json.dumps([(c['prompt'], c['generated']) for c in cases]))

# The manifest, so that the folder is a complete decoder bundle (`adept generate --bundle`).
import hashlib


def entry(name):
    data = (OUT / name).read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


inputs = ["input_ids", "attention_mask", "position_ids"] + [
    f"past_key_values.{i}.{k}" for i in range(LAYERS) for k in ("key", "value")
]
outputs = ["logits"] + [f"present.{i}.{k}" for i in range(LAYERS) for k in ("key", "value")]
manifest = {
    "format": "adept-bundle", "format_version": 1, "adept_version": "test", "model_family": "llama",
    "task": "causal-lm", "label_names": [], "regression": False, "text_fields": ["prompt"],
    "input_template": {"segment_a": ["prompt"], "segment_b": [], "joiner": " "},
    "prompt_length": L, "max_length": 32, "over_length": "truncate", "pad_token_id": 0,
    "vocab_size": V, "hidden_size": D, "num_outputs": V, "opset": 17, "dtype": "f32",
    "fold": "folded", "method": "adept", "pooling": "mean", "inputs": inputs, "outputs": outputs,
    "files": {f: entry(f) for f in ("model.onnx", "prompt_cache.safetensors", "tokenizer.json")},
    "provenance": {"model_dir": "", "model_sha256": "", "adapter_dir": "", "step": 0, "validation_metrics": {}},
    "decoder": {
        "task_kind": "causal-lm", "num_layers": LAYERS, "kv_heads": KV, "head_dim": HD, "vocab_size": V,
        "prompt_len": L, "bos_token_id": BOS, "eos_token_ids": EOS, "pad_token_id": 0,
        "max_sequence_len": 64,
        "chat_template": "{% for m in messages %}{{ m['content'].strip() }}{% endfor %}",
        "prompt_cache_file": "prompt_cache.safetensors", "virtual_token_base": V,
    },
}
(OUT / "adept.json").write_text(json.dumps(manifest, indent=2) + "\n")

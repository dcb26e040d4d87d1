#!/usr/bin/env python3
"""The usual PyTorch route to ONNX, for comparison with adept's exporter.

Builds the same classifier adept serves for a prompt method (PEFT's convention for encoder
prompt tuning): Hugging Face `BertModel` (all-MiniLM-L6-v2), a soft prompt P [l, d] prepended
to the word embeddings, attention mask extended with ones, token types with zeros, positions
counted over prompt + input, mean pooling over the input tokens, linear head. Exports it with
`torch.onnx.export` (TorchScript exporter, opset 17, dynamic batch and sequence axes) and
checks the ONNX file against PyTorch eager on a few sentences with ONNX Runtime.

    python3 tests/reference/torch_onnx_export.py --model DIR --params PARAMS.safetensors \
        --out model.onnx [--opset 17] [--int8-out model-int8.onnx]

With `--int8-out`, the exported file also goes through the usual Python int8 route:
`onnxruntime.quantization.quantize_dynamic` with its defaults (int8 weights, one scale per
tensor, activations quantized at run time), written to that path.

PARAMS.safetensors holds `prompt_embeddings [l, d]`, `classifier.weight [n, d]`,
`classifier.bias [n]` (the adept bench writes it from the Rust model, so both exports compute
the same function). The graph's inputs are `input_ids`, `attention_mask`, `token_type_ids`
(int64 [batch, sequence]) and its output `logits`, the contract of an adept bundle, so the same
runtime can serve and time both.

Needs: torch, transformers, safetensors, onnx, onnxruntime. Prints one JSON line with the
eager-vs-ONNX difference, the export time and the operator counts.
"""
import argparse
import collections
import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel


class PromptClassifier(torch.nn.Module):
    def __init__(self, bert, prompt, weight, bias):
        super().__init__()
        self.bert = bert
        self.prompt = torch.nn.Parameter(prompt, requires_grad=False)
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def forward(self, input_ids, attention_mask, token_type_ids):
        b = input_ids.shape[0]
        l = self.prompt.shape[0]
        words = self.bert.embeddings.word_embeddings(input_ids)
        prompt = self.prompt.unsqueeze(0).expand(b, -1, -1)
        embeds = torch.cat([prompt, words], dim=1)
        ones = torch.ones(b, l, dtype=attention_mask.dtype)
        zeros = torch.zeros(b, l, dtype=token_type_ids.dtype)
        mask = torch.cat([ones, attention_mask], dim=1)
        types = torch.cat([zeros, token_type_ids], dim=1)
        hidden = self.bert(
            inputs_embeds=embeds, attention_mask=mask, token_type_ids=types
        ).last_hidden_state[:, l:]
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return self.head(pooled)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--int8-out")
    args = ap.parse_args()

    torch.manual_seed(0)
    params = load_file(args.params)
    bert = BertModel.from_pretrained(args.model, add_pooling_layer=False).eval()
    model = PromptClassifier(
        bert, params["prompt_embeddings"], params["classifier.weight"], params["classifier.bias"]
    ).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    sentences = [
        "a gorgeous , witty , seductive movie .",
        "the story is too long and the acting is flat",
        "ok",
    ]
    enc = tok(sentences, padding=True, return_tensors="pt")
    feeds = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])

    start = time.time()
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        model,
        feeds,
        args.out,
        dynamo=False,
        opset_version=args.opset,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": axes,
            "attention_mask": axes,
            "token_type_ids": axes,
            "logits": {0: "batch"},
        },
        do_constant_folding=True,
    )
    export_s = time.time() - start

    with torch.no_grad():
        eager = model(*feeds).numpy()
    session = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    got = session.run(
        ["logits"],
        {k: v.numpy() for k, v in zip(["input_ids", "attention_mask", "token_type_ids"], feeds)},
    )[0]
    m = onnx.load(args.out)
    ops = collections.Counter((n.domain or "") + ":" + n.op_type for n in m.graph.node)
    int8 = None
    if args.int8_out:
        from onnxruntime.quantization import quantize_dynamic

        start = time.time()
        quantize_dynamic(args.out, args.int8_out)
        q = ort.InferenceSession(args.int8_out, providers=["CPUExecutionProvider"])
        got8 = q.run(
            ["logits"],
            {k: v.numpy() for k, v in zip(["input_ids", "attention_mask", "token_type_ids"], feeds)},
        )[0]
        int8 = {
            "out": args.int8_out,
            "quantize_s": round(time.time() - start, 2),
            "max_abs_diff_eager_vs_int8": float(np.abs(eager - got8).max()),
        }
    print(
        json.dumps(
            {
                "out": args.out,
                "export_s": round(export_s, 2),
                "max_abs_diff_eager_vs_onnx": float(np.abs(eager - got).max()),
                "nodes": len(m.graph.node),
                "ops": dict(ops),
                "torch": torch.__version__,
                "onnxruntime": ort.__version__,
                "int8": int8,
            }
        )
    )


if __name__ == "__main__":
    main()

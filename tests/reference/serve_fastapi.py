#!/usr/bin/env python3
"""The usual Python way to put an ONNX classifier behind HTTP, for `adept bench --server --pytorch`.

FastAPI + uvicorn (one process, uvicorn's defaults), one onnxruntime `InferenceSession` on the
bundle's model.onnx (graph optimisation "all", the given intra-op threads), the bundle's
tokenizer.json through the `tokenizers` library (truncation at the bundle's max_length; a
request's inputs padded to its longest), and the API of `adept serve`:

    POST /v1/models/{name}/predict  {"inputs": ["text", ["first", "second"], ...]}
        -> {"model": name, "predictions": [{"label", "label_id", "probabilities", "logits"}]}
    GET /health

The predict handler is a plain `def`, so FastAPI runs it in its thread pool and every request
runs its own `session.run` (onnxruntime releases the GIL): what such a server does without a
batching layer of its own.

    python3 tests/reference/serve_fastapi.py --bundle DIR --name NAME --port N [--threads 2]

Prints `listening on http://127.0.0.1:N` on stderr once the session is ready (the bench then
waits for GET /health to answer).
Needs: fastapi, uvicorn, onnxruntime, tokenizers, numpy.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import Body, FastAPI, HTTPException
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--name", default="bench")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    with open(os.path.join(args.bundle, "adept.json")) as f:
        manifest = json.load(f)
    labels = manifest["label_names"]
    takes_types = "token_type_ids" in manifest["inputs"]
    pad_id = manifest["pad_token_id"]

    tok = Tokenizer.from_file(os.path.join(args.bundle, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(manifest["max_length"])

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.threads:
        so.intra_op_num_threads = args.threads
    session = ort.InferenceSession(
        os.path.join(args.bundle, "model.onnx"), so, providers=["CPUExecutionProvider"]
    )

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok", "models": [args.name]}

    @app.post("/v1/models/{name}/predict")
    def predict(name: str, body: dict = Body(...)):
        if name != args.name:
            raise HTTPException(404, f"no model named {name!r}")
        inputs = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
        return infer(inputs)

    def infer(inputs):
        texts = [tuple(x) if isinstance(x, list) else x for x in inputs]
        encs = tok.encode_batch(texts)
        seq = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), seq), pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), seq), dtype=np.int64)
        types = np.zeros((len(encs), seq), dtype=np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
            types[i, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask}
        if takes_types:
            feed["token_type_ids"] = types
        logits = session.run(["logits"], feed)[0]
        preds = []
        for row in logits:
            z = np.exp(row - row.max())
            p = z / z.sum()
            k = int(row.argmax())
            preds.append(
                {
                    "label": labels[k] if k < len(labels) else None,
                    "label_id": k,
                    "probabilities": {l: float(v) for l, v in zip(labels, p)},
                    "logits": [float(v) for v in row],
                }
            )
        return {"model": args.name, "predictions": preds}

    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    print(f"listening on http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    server.run()


if __name__ == "__main__":
    main()

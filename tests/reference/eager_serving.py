#!/usr/bin/env python3
"""PyTorch eager beside ONNX Runtime, in one Python process, on the same padded batches.

The serving bench's other rows run in adept's own runtime; this is the route of a user who
serves the Hugging Face model with PyTorch. The eager model is the prompt classifier of
`torch_onnx_export.py` (BertModel + soft prompt + mean pooling + head): for speed it is the
folded ADePT model (a folded adapter only changes the word table's values). Each batch is run
by every variant in turn, in an order shuffled from batch to batch (seeded), so load drifts hit
all alike.

The ratios against eager are conservative: PyTorch's OpenMP threads spin for a while after each
eager call (its default wait policy), taking the cores from the ONNX Runtime run that follows
(on 2 cores, 10-20 % slower than the same run after another ONNX Runtime session). The shuffle
spreads that over the ONNX variants alike; a fixed rotation would always hand it to the same one.
With `OMP_WAIT_POLICY=PASSIVE` the ONNX rows run at full speed but eager loses ~20 %, and an
untimed pause after each run slows every row (idle cores start cold); neither is what a user
gets.

    python3 tests/reference/eager_serving.py --model DIR --params PARAMS.safetensors \
        --batches BATCHES.json --threads 2 [--onnx NAME=model.onnx ...]

BATCHES.json: {"batch1": [BATCH, ...], "batch32": [BATCH, ...]}, each BATCH
{"batch": b, "seq": s, "input_ids": [b*s], "attention_mask": [b*s], "token_type_ids": [b*s]}
(row-major, already padded: what the adept bench times). Prints one JSON line:
{"torch", "onnxruntime", "threads", "groups": {GROUP: {"eager": [ms per batch], NAME: [...]}}}.

Needs: torch, transformers, safetensors, onnx, onnxruntime.
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file
from transformers import BertModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_onnx_export import PromptClassifier  # noqa: E402

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--batches", required=True)
    ap.add_argument("--threads", type=int, default=0, help="0: the libraries' defaults")
    ap.add_argument("--onnx", action="append", default=[], metavar="NAME=PATH")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    params = load_file(args.params)
    bert = BertModel.from_pretrained(args.model, add_pooling_layer=False).eval()
    model = PromptClassifier(
        bert, params["prompt_embeddings"], params["classifier.weight"], params["classifier.bias"]
    ).eval()

    sessions = {}
    for spec in args.onnx:
        name, sep, path = spec.partition("=")
        if not sep:
            sys.exit(f"error: --onnx {spec!r}: expected NAME=PATH")
        so = ort.SessionOptions()
        if args.threads > 0:
            so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        # As the adept bench: several sessions take turns, so none spins while another runs.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        missing = {i.name for i in session.get_inputs()} - set(INPUTS)
        if missing:
            sys.exit(f"error: {path}: inputs {sorted(missing)} are not among {list(INPUTS)}")
        sessions[name] = session

    with open(args.batches) as f:
        groups = json.load(f)

    def arrays(b):
        shape = (b["batch"], b["seq"])
        return {k: np.asarray(b[k], dtype=np.int64).reshape(shape) for k in INPUTS}

    runners = [("eager", None)] + list(sessions.items())
    inputs = {name: [i.name for i in s.get_inputs()] for name, s in sessions.items()}

    def run(name, session, feeds, tensors):
        if session is None:
            with torch.inference_mode():
                model(*tensors)
        else:
            session.run(["logits"], {k: feeds[k] for k in inputs[name]})

    out = {}
    for group, batches in groups.items():
        data = []
        for b in batches:
            feeds = arrays(b)
            data.append((feeds, tuple(torch.from_numpy(feeds[k]) for k in INPUTS)))
        for name, session in runners:  # warm-up: the first two batches
            for feeds, tensors in data[:2]:
                run(name, session, feeds, tensors)
        times = {name: [] for name, _ in runners}
        order = list(runners)
        shuffle = random.Random(0).shuffle
        for feeds, tensors in data:
            shuffle(order)
            for name, session in order:
                t = time.perf_counter()
                run(name, session, feeds, tensors)
                times[name].append((time.perf_counter() - t) * 1e3)
        out[group] = times
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "onnxruntime": ort.__version__,
                "threads": args.threads,
                "groups": out,
            }
        )
    )


if __name__ == "__main__":
    main()

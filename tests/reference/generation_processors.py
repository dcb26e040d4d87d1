#!/usr/bin/env python3
"""Reference logits processing for `crates/adept-bundle/src/generate/tests.rs`.

Writes `tests/fixtures/generation_processors.json`: a few fixed float32 logit rows and, for each
case, the scores after Hugging Face transformers' processors in the order `generate` applies them
when sampling: `RepetitionPenaltyLogitsProcessor` (over the ids seen so far), then
`TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper` (each only when set to a
non-neutral value), all in float32 as transformers runs them. Removed positions are `-inf`
(written as the string "-inf"). Values are rounded-trip exact (float32 written as JSON numbers).

Run once (needs torch and transformers), then commit the JSON:
    /tmp/torchenv/bin/python tests/reference/generation_processors.py [OUT]
"""
import json
import math
import pathlib
import sys

import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

OUT = (
    pathlib.Path(sys.argv[1])
    if len(sys.argv) > 1
    else pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "generation_processors.json"
)

g = torch.Generator().manual_seed(0)
V = 12
# Distinct values (no ties at a top-k/top-p boundary), both signs.
rows = [
    (torch.randn(V, generator=g) * 2.0).tolist(),
    (torch.randn(V, generator=g) * 0.5 + 1.0).tolist(),
    [3.0, -1.0, 0.5, 2.5, -4.0, 1.25, 0.0, -0.75, 4.5, 1.75, -2.25, 0.25],
]

CASES = [
    # name, row, seen ids, repetition_penalty, temperature, top_k, top_p
    ("penalty_only", 0, [1, 3, 3, 7], 1.3, 1.0, 0, 1.0),
    ("penalty_below_one", 2, [0, 1, 4], 0.8, 1.0, 0, 1.0),
    ("temperature", 1, [], 1.0, 0.7, 0, 1.0),
    ("top_k", 0, [], 1.0, 1.0, 4, 1.0),
    ("top_p", 2, [], 1.0, 1.0, 0, 0.8),
    ("top_p_tiny_keeps_one", 1, [], 1.0, 1.0, 0, 0.01),
    ("all", 2, [8, 0, 0, 3], 1.2, 0.8, 6, 0.9),
    ("all_row0", 0, [2, 5], 1.5, 1.3, 5, 0.7),
    ("top_k_above_vocab", 1, [], 1.0, 1.0, 50, 1.0),
]


def enc(x):
    return "-inf" if math.isinf(x) and x < 0 else x


cases = []
for name, r, seen, pen, temp, k, p in CASES:
    scores = torch.tensor([rows[r]], dtype=torch.float32)
    ids = torch.tensor([seen if seen else [0]], dtype=torch.long)
    if pen != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(pen)(ids, scores)
    if temp != 1.0:
        scores = TemperatureLogitsWarper(temp)(ids, scores)
    if k != 0:
        scores = TopKLogitsWarper(k)(ids, scores)
    if p != 1.0:
        scores = TopPLogitsWarper(p)(ids, scores)
    cases.append(
        {
            "name": name,
            "logits": [float(torch.tensor(v, dtype=torch.float32)) for v in rows[r]],
            "seen_ids": seen,
            "repetition_penalty": pen,
            "temperature": temp,
            "top_k": k,
            "top_p": p,
            "expected": [enc(float(v)) for v in scores[0].tolist()],
        }
    )

OUT.write_text(json.dumps({"transformers": __import__("transformers").__version__, "cases": cases}, indent=1) + "\n")
print(f"wrote {OUT} ({len(cases)} cases)")

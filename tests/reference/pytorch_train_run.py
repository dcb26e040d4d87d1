#!/usr/bin/env python3
"""PyTorch reference of a whole ADePT training run on all-MiniLM-L6-v2, for its peak memory.

The model, adapter, optimizer and schedule are those of pytorch_train_step.py (same folder):
frozen BertModel, soft prompt l = 60, ADePT token MLP r = 19, mean pooling, linear head,
AdamW (prompt 3e-1, MLP 1e-4, head 1e-3). The run is what `adept train --task T --steps N
--eval-every K` does: N steps of batch 32 drawn from the shuffled training split (seeded),
maximum length 128 (sentence pairs truncated longest-first), evaluation on the whole dev split
every K steps and at the end, batch 32 without gradients.

Prints one JSON line: {"impl":"pytorch","task":..,"steps":N,"peak_rss_mb":..,"dev_acc":[..],
"wall_s":..}. Peak RSS is the process's VmHWM (ru_maxrss), the same figure `/usr/bin/time -v`
reports for `adept train`.

  python tests/reference/pytorch_train_run.py --task RTE --steps 300 --eval-every 100
"""
import argparse
import csv
import json
import os
import random
import resource
import sys
import time

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_train_step import DEFAULT_MODEL, AdeptClassifier  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GLUE = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "glue"))


def read_task(glue, task, split):
    """(texts, labels): texts are (sentence,) or (sentence1, sentence2) tuples."""
    path = os.path.join(glue, task, f"{split}.tsv")
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task == "CoLA":  # no header: source, label, original label, sentence
            for r in reader:
                rows.append(((r[3],), int(r[1])))
        elif task == "SST-2":
            next(reader)
            for r in reader:
                rows.append(((r[0],), int(r[1])))
        elif task == "RTE":
            next(reader)
            for r in reader:
                rows.append(((r[1], r[2]), 0 if r[3] == "entailment" else 1))
        else:
            sys.exit(f"task {task}: use SST-2, CoLA or RTE")
    return rows


def encode(tok, rows, max_len):
    firsts = [t[0] for t, _ in rows]
    seconds = [t[1] for t, _ in rows] if len(rows[0][0]) == 2 else None
    enc = tok(firsts, seconds, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], torch.tensor([y for _, y in rows])


def main():
    ap = argparse.ArgumentParser(description="PyTorch ADePT training run (peak memory reference)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--glue", default=DEFAULT_GLUE)
    ap.add_argument("--task", default="RTE")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=60)
    ap.add_argument("--rank", type=int, default=19)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = read_task(args.glue, args.task, "train")
    dev = read_task(args.glue, args.task, "dev")
    tok = AutoTokenizer.from_pretrained(args.model)
    bert = BertModel.from_pretrained(args.model, dtype=torch.float32, add_pooling_layer=False)
    model = AdeptClassifier(bert, args.prompt_len, args.rank, 2, args.seed)
    model.train()
    model.bert.eval()
    opt = torch.optim.AdamW(
        [
            {"params": [model.prompt_embeddings], "lr": 3e-1},
            {"params": list(model.prompt_encoder.parameters()), "lr": 1e-4},
            {"params": list(model.head.parameters()), "lr": 1e-3},
        ],
        betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0,
    )
    warm = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (args.steps - s) / (args.steps - warm)))

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(dev), args.batch):
                ids, mask, y = encode(tok, dev[i:i + args.batch], args.max_len)
                correct += (model(ids, mask).argmax(-1) == y).sum().item()
        model.train()
        model.bert.eval()
        return correct / len(dev)

    rng = random.Random(args.seed)
    order, accs = [], []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            perm = list(range(len(train)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[:args.batch], order[args.batch:]
        ids, mask, y = encode(tok, [train[i] for i in idx], args.max_len)
        loss = F.cross_entropy(model(ids, mask), y)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % args.eval_every == 0 or step == args.steps:
            accs.append(round(evaluate(), 4))
            print(f"step {step} loss {loss.item():.4f} dev acc {accs[-1]}", file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "pytorch", "task": args.task, "steps": args.steps,
                      "peak_rss_mb": round(peak, 1), "dev_acc": accs,
                      "wall_s": round(time.perf_counter() - t0, 1), "threads": args.threads}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch reference timing of one ADePT training step on frozen all-MiniLM-L6-v2 (the benchmark baseline).

Set-up (mirrors the adept benchmark):
* frozen all-MiniLM-L6-v2 BertModel (fp32, CPU); backbone parameters require no grad;
* soft prompt P [l=60, d] prepended before [CLS] via inputs_embeds; attention mask prepended with
  ones, token_type_ids zeros over prompt + input, position_ids 0..l+s-1 over prompt + input (PEFT);
  P initialised from sampled vocabulary rows (SAMPLE_VOCAB);
* ADePT token-wise offsets on the input word embeddings only (not the prompt):
  E' = E + ReLU(dropout_0.1(E·W_down + b1))·W_up + b2, r = 19, W_down kaiming-uniform U(±1/√r),
  W_up, b1, b2 zero;
* mean pooling over the input tokens (prompt rows and padding excluded), linear head to 2 classes,
  cross-entropy;
* AdamW with parameter groups (prompt lr 3e-1, MLP lr 1e-4, head lr 1e-3), eps 1e-6,
  betas (0.9, 0.98), weight decay 0, linear warm-up/decay schedule;
* batches of 32 consecutive SST-2 training sentences (rows 0..32·(warmup+N)), max length 128,
  dynamic padding (to the longest in the batch). Tokenisation happens before timing.

The timed region is forward + backward + optimizer step + scheduler step + zero_grad, per step,
after `--warmup` untimed steps. The frozen backbone runs in eval mode (no dropout inside BERT; the
only dropout is the ADePT one); --backbone-dropout puts it in train mode as PEFT does (about +0.6 s
per step on 2 threads). Prints one JSON line:
{"impl":"pytorch","step_s_mean":..,"step_s_median":..,"steps":N,"peak_rss_mb":..,"threads":T}
(peak_rss_mb: ru_maxrss of the whole process)
"""
import argparse
import csv
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoTokenizer, BertModel

DEFAULT_MODEL = os.path.expanduser("~/.cache/adept/models/all-MiniLM-L6-v2")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "glue", "SST-2", "train.tsv"))
if not os.path.exists(DEFAULT_DATA):
    DEFAULT_DATA = "/work/shared/data/glue/SST-2/train.tsv"


class AdeptMlp(nn.Module):
    """E + ReLU(dropout(E·W_down + b1))·W_up + b2 (PEFT-style names)."""

    def __init__(self, d, r, p=0.1):
        super().__init__()
        self.lora_embedding_A = nn.Parameter(torch.empty(d, r))  # W_down
        self.lora_embedding_B = nn.Parameter(torch.zeros(r, d))  # W_up
        self.lora_embedding_a = nn.Parameter(torch.zeros(r))  # b1
        self.lora_embedding_b = nn.Parameter(torch.zeros(d))  # b2
        bound = 1.0 / math.sqrt(r)  # kaiming_uniform(a=√5) on a [d, r] tensor (fan_in = r)
        nn.init.uniform_(self.lora_embedding_A, -bound, bound)
        self.dropout = nn.Dropout(p)

    def forward(self, e):
        h = self.dropout(e @ self.lora_embedding_A + self.lora_embedding_a)
        return e + F.relu(h) @ self.lora_embedding_B + self.lora_embedding_b


class AdeptClassifier(nn.Module):
    def __init__(self, bert, l, r, num_labels, seed):
        super().__init__()
        self.bert = bert
        for p in self.bert.parameters():
            p.requires_grad_(False)
        d = bert.config.hidden_size
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, bert.config.vocab_size, (l,), generator=g)
        self.prompt_embeddings = nn.Parameter(bert.embeddings.word_embeddings.weight[ids].detach().clone())
        self.prompt_encoder = AdeptMlp(d, r)
        self.head = nn.Linear(d, num_labels)

    def forward(self, input_ids, attention_mask):
        b, s = input_ids.shape
        l = self.prompt_embeddings.shape[0]
        e = self.bert.embeddings.word_embeddings(input_ids)
        e = self.prompt_encoder(e)
        x = torch.cat([self.prompt_embeddings.unsqueeze(0).expand(b, -1, -1), e], dim=1)
        dev = input_ids.device
        mask = torch.cat([torch.ones(b, l, dtype=attention_mask.dtype, device=dev), attention_mask], dim=1)
        tt = torch.zeros(b, l + s, dtype=torch.long, device=dev)
        pos = torch.arange(l + s, device=dev).unsqueeze(0).expand(b, -1)
        hs = self.bert(inputs_embeds=x, attention_mask=mask, token_type_ids=tt, position_ids=pos).last_hidden_state
        hs = hs[:, l:]
        m = attention_mask.unsqueeze(-1).to(hs.dtype)
        pooled = (hs * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(pooled)


def read_sst2(path, n):
    sents, labels = [], []
    with open(path, newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        for row in rows:
            sents.append(row[0])
            labels.append(int(row[1]))
            if len(sents) == n:
                break
    if len(sents) < n:
        sys.exit(f"{path} has only {len(sents)} rows, need {n}")
    return sents, labels


def main():
    ap = argparse.ArgumentParser(description="PyTorch ADePT train-step timing on all-MiniLM-L6-v2")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=20, help="timed steps N")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=60)
    ap.add_argument("--rank", type=int, default=19)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backbone-dropout", action="store_true",
                    help="run the frozen backbone in train mode (its dropout on), as PEFT does")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where the step runs (cuda: timed with torch.cuda.synchronize)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: this torch has no usable CUDA device")
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    total = args.warmup + args.steps
    sents, labels = read_sst2(args.data, args.batch * total)
    tok = AutoTokenizer.from_pretrained(args.model)
    batches = []
    for i in range(total):
        sl = slice(i * args.batch, (i + 1) * args.batch)
        enc = tok(sents[sl], padding=True, truncation=True, max_length=args.max_len, return_tensors="pt")
        batches.append((enc["input_ids"].to(dev), enc["attention_mask"].to(dev), torch.tensor(labels[sl]).to(dev)))

    bert = BertModel.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn,
                                     add_pooling_layer=False)
    model = AdeptClassifier(bert, args.prompt_len, args.rank, 2, args.seed).to(dev)
    model.train()
    if not args.backbone_dropout:
        model.bert.eval()
    opt = torch.optim.AdamW(
        [
            {"params": [model.prompt_embeddings], "lr": 3e-1},
            {"params": list(model.prompt_encoder.parameters()), "lr": 1e-4},
            {"params": list(model.head.parameters()), "lr": 1e-3},
        ],
        betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0,
    )
    warm, horizon = 500, 10_000
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (horizon - s) / (horizon - warm)))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    times, losses = [], []
    for i, (ids, mask, y) in enumerate(batches):
        sync()
        t0 = time.perf_counter()
        logits = model(ids, mask)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(dt)

    seq = [int(b[0].shape[1]) for b in batches[args.warmup:]]
    print(json.dumps({"trainable_params": n_trainable, "mean_input_len": statistics.mean(seq),
                      "max_input_len": max(seq), "attn": args.attn,
                      "backbone_dropout": args.backbone_dropout,
                      "first_loss": losses[0], "last_loss": losses[-1],
                      "torch": torch.__version__}), file=sys.stderr)
    print(json.dumps({"impl": "pytorch", "step_s_mean": round(statistics.mean(times), 4),
                      "step_s_median": round(statistics.median(times), 4), "steps": args.steps,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
                      "threads": args.threads, "device": args.device}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch reference timing of one ADePT/PT/DePT training step on a frozen causal LM (the decoder
benchmark baseline; `adept bench --task-kind causal-lm --pytorch` runs it beside candle).

Set-up (mirrors adept's causal-LM training):
* a frozen LlamaForCausalLM (fp32, CPU) from an HF-layout folder (`adept fetch --model smollm2`
  caches SmolLM2-135M-Instruct as one) or a GGUF file (`--gguf`); no parameter requires grad;
* SST-2 verbalised: prompt "Review: {sentence}\nSentiment:", completion " positive"/" negative";
  prompt and completion tokenised separately, no BOS (SmolLM2 adds none), right padding;
* the soft prompt P [l, d] comes first (sampled vocabulary rows), attention mask prepended with
  ones; ADePT offsets E + ReLU(dropout_0.1(E·W_down + b1))·W_up + b2 on every input token
  (W_down kaiming-uniform U(±1/√r), the rest zero); DePT offsets (α/√r)(A·B)[:s] per position;
* loss: mean cross-entropy over the completion tokens only (labels -100 elsewhere), the LM head
  evaluated on every row as transformers does;
* AdamW, prompt lr 1e-3 (the paper's decoder setting), offsets lr 1e-4, eps 1e-6,
  betas (0.9, 0.98), weight decay 0.

The timed region is forward + backward + optimizer step + zero_grad, per step, after `--warmup`
untimed steps. Peak resident memory (ru_maxrss) is reported for the whole process. Prints one JSON
line: {"impl":"pytorch","step_s_mean":..,"step_s_median":..,"peak_rss_mb":..,"steps":N,"threads":T}
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
from transformers import AutoModelForCausalLM, AutoTokenizer

DEFAULT_MODEL = os.path.expanduser("~/.cache/adept/models/smollm2-135m-instruct")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "glue", "SST-2", "train.tsv"))
if not os.path.exists(DEFAULT_DATA):
    DEFAULT_DATA = "/work/shared/data/glue/SST-2/train.tsv"
WORDS = [" negative", " positive"]


class Offsets(nn.Module):
    def __init__(self, method, d, r, max_len, p=0.1):
        super().__init__()
        self.method = method
        bound = 1.0 / math.sqrt(r)
        if method == "adept":
            self.lora_embedding_A = nn.Parameter(torch.empty(d, r).uniform_(-bound, bound))
            self.lora_embedding_B = nn.Parameter(torch.zeros(r, d))
            self.lora_embedding_a = nn.Parameter(torch.zeros(r))
            self.lora_embedding_b = nn.Parameter(torch.zeros(d))
            self.dropout = nn.Dropout(p)
        elif method == "dept":
            self.lora_embedding_A = nn.Parameter(torch.empty(max_len, r).uniform_(-bound, bound))
            self.lora_embedding_B = nn.Parameter(torch.zeros(r, d))
            self.scale = 8.0 / math.sqrt(r)

    def forward(self, e):
        if self.method == "adept":
            h = self.dropout(e @ self.lora_embedding_A + self.lora_embedding_a)
            return e + F.relu(h) @ self.lora_embedding_B + self.lora_embedding_b
        if self.method == "dept":
            s = e.shape[1]
            return e + self.scale * (self.lora_embedding_A[:s] @ self.lora_embedding_B)
        return e


def read_sst2(path, n):
    rows_out = []
    with open(path, newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        for row in rows:
            rows_out.append((row[0], int(row[1])))
            if len(rows_out) == n:
                break
    if len(rows_out) < n:
        sys.exit(f"{path} has only {len(rows_out)} rows, need {n}")
    return rows_out


def main():
    ap = argparse.ArgumentParser(description="PyTorch causal-LM prompt-tuning step timing")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--gguf", default=None, help="a GGUF file name inside --model (transformers dequantizes it)")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--method", default="adept", choices=["adept", "pt", "dept"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps N")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=7)
    ap.add_argument("--rank", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    total = args.warmup + args.steps
    data = read_sst2(args.data, args.batch * total)
    kw = {"gguf_file": args.gguf} if args.gguf else {}
    tok = AutoTokenizer.from_pretrained(args.model, **kw)
    lm = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn, **kw)
    lm.eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    emb = lm.get_input_embeddings().weight
    vocab, d = emb.shape
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    batches = []
    for i in range(total):
        seqs, tgts = [], []
        for sent, label in data[i * args.batch:(i + 1) * args.batch]:
            p_ids = tok(f"Review: {sent}\nSentiment:", add_special_tokens=False)["input_ids"]
            c_ids = tok(WORDS[label], add_special_tokens=False)["input_ids"]
            p_ids = p_ids[-(args.max_len - len(c_ids)):]
            seqs.append(p_ids + c_ids)
            tgts.append([-100] * len(p_ids) + c_ids)
        s = max(len(x) for x in seqs)
        ids = torch.tensor([x + [pad] * (s - len(x)) for x in seqs])
        mask = torch.tensor([[1] * len(x) + [0] * (s - len(x)) for x in seqs])
        labels = torch.tensor([t + [-100] * (s - len(t)) for t in tgts])
        batches.append((ids, mask, labels))

    l = args.prompt_len if args.method != "none" else 0
    g = torch.Generator().manual_seed(args.seed)
    prompt = nn.Parameter(emb[torch.randint(0, vocab, (l,), generator=g)].detach().clone())
    offsets = Offsets(args.method, d, args.rank, args.max_len)
    offsets.train()
    groups = [{"params": [prompt], "lr": 1e-3}]
    if list(offsets.parameters()):
        groups.append({"params": list(offsets.parameters()), "lr": 1e-4})
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    n_trainable = sum(p.numel() for grp in groups for p in grp["params"])

    times, losses = [], []
    for i, (ids, mask, labels) in enumerate(batches):
        t0 = time.perf_counter()
        b = ids.shape[0]
        e = offsets(lm.get_input_embeddings()(ids))
        x = torch.cat([prompt.unsqueeze(0).expand(b, -1, -1), e], dim=1)
        m = torch.cat([torch.ones(b, l, dtype=mask.dtype), mask], dim=1)
        pos = (m.cumsum(-1) - 1).clamp(min=0)
        lab = torch.cat([torch.full((b, l), -100), labels], dim=1)
        out = lm(inputs_embeds=x, attention_mask=m, position_ids=pos, labels=lab)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(out.loss.item())
        if i >= args.warmup:
            times.append(dt)

    seq = [int(bt[0].shape[1]) for bt in batches[args.warmup:]]
    print(json.dumps({"trainable_params": n_trainable, "mean_input_len": statistics.mean(seq),
                      "first_loss": losses[0], "last_loss": losses[-1], "attn": args.attn,
                      "torch": torch.__version__}), file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "pytorch", "method": args.method, "step_s_mean": round(statistics.mean(times), 4),
                      "step_s_median": round(statistics.median(times), 4), "peak_rss_mb": round(peak, 1),
                      "steps": args.steps, "threads": args.threads}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch reference timing of one ADePT training step on a frozen T5 (text-to-text), the
counterpart of adept's `t5_base_step_timing` (crates/adept-train/tests/seq2seq.rs).

Set-up (mirrors adept's seq2seq training):
* T5ForConditionalGeneration built from a config with random weights (no download): by default
  T5-base-sized (d_model 768, 12 + 12 layers, 12 heads, d_kv 64, d_ff 3072, vocab 32128,
  feed_forward_proj relu), fp32, CPU, eval mode (no backbone dropout; candle's T5 has none),
  no parameter requires grad;
* random source ids (64 tokens, last = EOS) and targets (4 tokens, last = EOS), batch 8;
* the soft prompt P [l, d] (sampled vocabulary rows) and ADePT offsets
  E + ReLU(dropout_0.1(E·W_down + b1))·W_up + b2 on the encoder's input embeddings only:
  `inputs_embeds = [P; E + f(E)]`, attention mask prepended with ones; `labels` = the targets
  (transformers shifts them right behind decoder_start_token_id for the decoder);
* loss: transformers' mean token cross-entropy over the labels;
* AdamW, prompt lr 3e-1, offsets lr 1e-4, eps 1e-6, betas (0.9, 0.98), weight decay 0.

The timed region is forward + backward + optimizer step + zero_grad, per step, after `--warmup`
untimed steps. Peak resident memory covers the whole process: VmHWM from /proc/self/status on
Linux (ru_maxrss survives exec, so under a parent such as adept's timing test it would report the
parent's peak), ru_maxrss elsewhere. Prints one JSON line
(and writes it to `--out` when given):
{"impl":"pytorch","step_s":[..],"step_s_median":..,"peak_rss_mb":..,"steps":N,"threads":T}
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration


class AdeptOffsets(nn.Module):
    def __init__(self, d, r, p=0.1):
        super().__init__()
        bound = 1.0 / math.sqrt(r)
        self.lora_embedding_A = nn.Parameter(torch.empty(d, r).uniform_(-bound, bound))
        self.lora_embedding_B = nn.Parameter(torch.zeros(r, d))
        self.lora_embedding_a = nn.Parameter(torch.zeros(r))
        self.lora_embedding_b = nn.Parameter(torch.zeros(d))
        self.dropout = nn.Dropout(p)

    def forward(self, e):
        h = self.dropout(e @ self.lora_embedding_A + self.lora_embedding_a)
        return e + F.relu(h) @ self.lora_embedding_B + self.lora_embedding_b


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description="PyTorch T5 ADePT training-step timing")
    ap.add_argument("--out", default=None, help="also write the JSON line here")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--src-len", type=int, default=64)
    ap.add_argument("--tgt-len", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=60)
    ap.add_argument("--rank", type=int, default=19)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--d-ff", type=int, default=3072)
    ap.add_argument("--vocab", type=int, default=32128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = T5Config(
        vocab_size=args.vocab, d_model=args.d_model, d_kv=args.d_model // args.heads,
        d_ff=args.d_ff, num_layers=args.layers, num_decoder_layers=args.layers,
        num_heads=args.heads, feed_forward_proj="relu", tie_word_embeddings=True,
        decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
    )
    model = T5ForConditionalGeneration(cfg)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    emb = model.get_input_embeddings().weight
    vocab, d = emb.shape

    g = torch.Generator().manual_seed(args.seed)

    def rows(n):
        x = torch.randint(2, vocab, (args.batch, n), generator=g)
        x[:, -1] = 1
        return x

    src, labels = rows(args.src_len), rows(args.tgt_len)
    mask = torch.ones_like(src)
    l = args.prompt_len
    prompt = nn.Parameter(emb[torch.randint(0, vocab, (l,), generator=g)].detach().clone())
    offsets = AdeptOffsets(d, args.rank)
    offsets.train()
    opt = torch.optim.AdamW(
        [{"params": [prompt], "lr": 3e-1}, {"params": list(offsets.parameters()), "lr": 1e-4}],
        betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0,
    )
    full_mask = torch.cat([torch.ones(args.batch, l, dtype=mask.dtype), mask], 1)

    times = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        e = offsets(emb[src])
        embeds = torch.cat([prompt.unsqueeze(0).expand(args.batch, -1, -1), e], 1)
        out = model(inputs_embeds=embeds, attention_mask=full_mask, labels=labels)
        loss = out.loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        assert math.isfinite(loss.item())
        if step >= args.warmup:
            times.append(dt)
    line = json.dumps({
        "impl": "pytorch", "step_s": times, "step_s_median": statistics.median(times),
        "peak_rss_mb": peak_rss_mb(),
        "steps": args.steps, "threads": args.threads,
    })
    print(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()

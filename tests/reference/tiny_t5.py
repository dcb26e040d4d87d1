#!/usr/bin/env python3
"""Two tiny RANDOM T5ForConditionalGeneration models and their expected outputs, as test fixtures.

Regenerates tests/fixtures/tiny-t5-v1/ and tests/fixtures/tiny-t5-v11/ (deterministic, seeded, CPU only,
no downloads):

* v1   feed_forward_proj "relu", tie_word_embeddings true (lm_head = shared, decoder output scaled by
       d_model^-0.5), 2 encoder + 2 decoder layers, d_model 16, 4 heads of d_kv 4, d_ff 32.
* v11  feed_forward_proj "gated-gelu" (gelu_new gate), tie_word_embeddings false: its own lm_head.weight,
       no output scaling, 2 encoder + 3 decoder layers, d_model 16, 4 heads of d_kv 6 (inner 24 != d_model),
       d_ff 24.
Both: vocab 100, 32 relative-attention buckets, max distance 20 (sequences of up to 11 reach the log buckets).

Each folder holds
* config.json        HF layout (model_type "t5"); tie_word_embeddings as a hub T5 / T5 v1.1 config says it.
* model.safetensors  f32, tensor names as a hub checkpoint: shared.weight (no embed_tokens copies, to keep the
                     file small), encoder.block.{i}.layer.{j}...,
                     encoder.final_layer_norm.weight, decoder..., and lm_head.weight (v11 only; v1 ties it).
* tokenizer.json     a T5-style Unigram tokenizer built here with `tokenizers` (<pad>=0 </s>=1 <unk>=2,
                     Metaspace, "$A </s>"; see build_tokenizer), the same in both folders.
* expected.json      computed by transformers (fp32, eval, eager attention) for a right-padded batch of 2:
    input_ids, attention_mask                      [2, 7] (pad 0, EOS 1 ends each row)
    encoder_last_hidden_state                      [2, 7, d] from input_ids
    prompt.prompt_embeds [4, d], prompt.encoder_last_hidden_state [2, 11, d]:
        encoder from inputs_embeds = [P ; shared(input_ids)], mask prepended with ones (ADePT's input side)
    decoder_input_ids [2, 5] (decoder_start_token_id first), logits [2, 5, vocab]: teacher-forced
        forward (encoder from input_ids)
    relative_position_buckets: T5Attention._relative_position_bucket of key - query in -60..60, both
        directions, for (32 buckets, distance 20), (32, 128) and (64, 50)
    tokenizer.texts / tokenizer.input_ids: three texts and their ids from the `tokenizers` library
    greedy.sequences: generate(do_sample=False, num_beams=1, max_new_tokens=8, use_cache=False), decoder start included,
        finished rows padded with pad_token_id
    beam.sequences, beam.sequences_scores: generate(num_beams=3, length_penalty=1.0, max_new_tokens=8,
        early_stopping=False, num_return_sequences=1); beam_lp: the same with num_beams=4,
        length_penalty=0.5, max_new_tokens=10 (rows stop at EOS, the search stops early); beam outputs are padded after EOS with EOS (transformers
        fills with `pad_token_id or eos_token_id`, and pad is 0). Generation runs with use_cache=False
        (transformers 5 sizes the decoder cache by num_layers, which fails when num_decoder_layers differs).

transformers 5 forces T5Config.tie_word_embeddings = True and keeps the v1.1 behaviour in
scale_decoder_outputs; the reference model for v11 gets an lm_head distinct from shared (assigned after
construction), and config.json is written with tie_word_embeddings false, as hub T5 v1.1 configs are.

Weights: after transformers' init every tensor is redrawn from a seeded generator: shared N(0, 1), then each
row rescaled to norm sqrt(d_model); attention and FFN matrices N(0, 0.5); relative attention bias N(0, 0.5);
layer norm weights 1 + N(0, 0.1); lm_head (v11) N(0, 0.2). The EOS row of the output table is scaled (x1.3).
Seeds were picked so that generations vary, greedy (v1) and beam (v11) stop at EOS in one row, and beam
search differs from greedy.

Floats in JSON are f32 values written with the shortest decimal that round-trips to the same f32.

Usage: python3 tests/reference/tiny_t5.py [--out DIR]   (DIR: the fixtures folder; default tests/fixtures)
Needs: torch, transformers, tokenizers, safetensors (versions used are recorded in expected.json).
"""
import argparse
import collections
import json
import math
import os
import platform
import re

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import T5Config, T5ForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "fixtures")

SEED = 20250105
VOCAB = 100
D_MODEL = 16
HEADS = 4
BUCKETS = 32
MAX_DISTANCE = 20
PAD, EOS, START = 0, 1, 0
EOS_SCALE = 1.3

VARIANTS = {
    "tiny-t5-v1": dict(feed_forward_proj="relu", tie=True, num_layers=2, num_decoder_layers=2, d_kv=4, d_ff=32,
                       seed=SEED + 14),
    "tiny-t5-v11": dict(feed_forward_proj="gated-gelu", tie=False, num_layers=2, num_decoder_layers=3, d_kv=6,
                        d_ff=24, seed=SEED + 1),
}


# Tokenizer training text: ADePT-style text-to-text inputs and targets.
SENTENCES = [
    "the cat sat on the mat.", "sentence: a great movie!", "sentence1: it rained. sentence2: we stayed in.",
    "question: is the sky blue? sentence: yes it is.", "the film was not good, the music was.", "positive",
    "negative", "premise: a dog runs. hypothesis: an animal moves.", "0", "1", "2", "3.5",
]
TOKENIZER_CHECK = ["sentence: the movie was great!", "premise: a cat runs. hypothesis: it moves.", "1"]


def build_tokenizer():
    """A T5-style Unigram (SentencePiece-like) tokenizer: <pad>=0 </s>=1 <unk>=2, Metaspace ("\u2581") pre-tokenizer
    and decoder, "$A </s>" post-processor. The pieces are built here, not trained (the `tokenizers` Unigram trainer
    is not deterministic): every character of SENTENCES and "\u2581" (score -20), then the most frequent
    "\u2581word" pieces (score log frequency), up to VOCAB pieces in all."""
    words, chars = collections.Counter(), set("\u2581")
    for text in SENTENCES:
        for w in text.split(" "):
            chars.update(w)
            m = re.match(r"[a-z0-9]+", w)
            if m:
                words["\u2581" + m.group(0)] += 1
    chars = sorted(chars)
    room = VOCAB - 3 - len(chars)
    top = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:room]
    total = sum(words.values())
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -20.0) for c in chars]
    vocab += [(w, math.log(n / total)) for w, n in top]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", EOS)])
    assert tok.token_to_id("<pad>") == PAD and tok.token_to_id("</s>") == EOS
    assert tok.get_vocab_size() <= VOCAB
    return tok


def f32_list(t):
    """Nested lists of floats, each the shortest decimal that round-trips to the same f32."""
    a = t.detach().cpu().to(torch.float32).numpy()
    flat = [float(str(v)) for v in a.reshape(-1)]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def build(name, spec):
    torch.manual_seed(spec["seed"])
    cfg = T5Config(
        vocab_size=VOCAB, d_model=D_MODEL, d_kv=spec["d_kv"], d_ff=spec["d_ff"], num_layers=spec["num_layers"],
        num_decoder_layers=spec["num_decoder_layers"], num_heads=HEADS,
        relative_attention_num_buckets=BUCKETS, relative_attention_max_distance=MAX_DISTANCE,
        dropout_rate=0.0, layer_norm_epsilon=1e-6, feed_forward_proj=spec["feed_forward_proj"],
        tie_word_embeddings=spec["tie"], decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=PAD,
        attn_implementation="eager",
    )
    model = T5ForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(spec["seed"])
    with torch.no_grad():
        if not spec["tie"]:
            model.lm_head.weight = torch.nn.Parameter(torch.empty(VOCAB, D_MODEL))
        for pname, p in model.named_parameters():
            if pname == "shared.weight":
                std, base = 1.0, 0.0
            elif pname == "lm_head.weight":
                std, base = 0.2, 0.0
            elif "relative_attention_bias" in pname:
                std, base = 0.5, 0.0
            elif "layer_norm" in pname:
                std, base = 0.1, 1.0
            else:
                std, base = 0.5, 0.0
            p.copy_(base + std * torch.randn(p.shape, generator=g))
        # Rows of equal norm sqrt(d): otherwise the longest row wins every tied-head argmax.
        model.shared.weight.copy_(model.shared.weight / model.shared.weight.norm(dim=-1, keepdim=True)
                                  * D_MODEL ** 0.5)
        out_table = model.shared.weight if spec["tie"] else model.lm_head.weight
        out_table[EOS] *= EOS_SCALE
    assert model.config.scale_decoder_outputs == spec["tie"]
    if not spec["tie"]:
        assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    return model


def save(model, spec, folder):
    os.makedirs(folder, exist_ok=True)
    shared = model.shared.weight.detach().contiguous()
    tensors = {"shared.weight": shared.clone()}
    for n, p in model.named_parameters():
        if n.startswith(("encoder.", "decoder.")) and "embed_tokens" not in n:
            tensors[n] = p.detach().contiguous().clone()
    if not spec["tie"]:
        tensors["lm_head.weight"] = model.lm_head.weight.detach().contiguous().clone()
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    cfg = {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "vocab_size": VOCAB, "d_model": D_MODEL, "d_kv": spec["d_kv"], "d_ff": spec["d_ff"],
        "num_layers": spec["num_layers"], "num_decoder_layers": spec["num_decoder_layers"], "num_heads": HEADS,
        "relative_attention_num_buckets": BUCKETS, "relative_attention_max_distance": MAX_DISTANCE,
        "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
        "feed_forward_proj": spec["feed_forward_proj"], "is_encoder_decoder": True, "use_cache": True,
        "tie_word_embeddings": spec["tie"], "decoder_start_token_id": START, "eos_token_id": EOS,
        "pad_token_id": PAD,
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def expected(model, tok):
    g = torch.Generator().manual_seed(7)
    ids = torch.tensor([[12, 57, 33, 8, 91, 40, EOS], [5, 77, 23, 64, EOS, PAD, PAD]])
    mask = (torch.arange(7)[None, :] < torch.tensor([[7], [5]])).long()
    out = {"input_ids": ids.tolist(), "attention_mask": mask.tolist()}
    with torch.no_grad():
        enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        out["encoder_last_hidden_state"] = f32_list(enc)

        prompt = torch.randn(4, D_MODEL, generator=g)
        embeds = torch.cat([prompt[None].expand(2, -1, -1), model.shared(ids)], dim=1)
        pmask = torch.cat([torch.ones(2, 4, dtype=torch.long), mask], dim=1)
        penc = model.encoder(inputs_embeds=embeds, attention_mask=pmask).last_hidden_state
        out["prompt"] = {"prompt_embeds": f32_list(prompt), "encoder_last_hidden_state": f32_list(penc)}

        dec = torch.tensor([[START, 14, 3, 88, 42], [START, 9, 61, 2, 30]])
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        out["decoder_input_ids"] = dec.tolist()
        out["logits"] = f32_list(logits)

        greedy = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                                max_new_tokens=8, use_cache=False)
        out["greedy"] = {"sequences": greedy.tolist()}
        beam = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=3,
                              length_penalty=1.0, early_stopping=False, max_new_tokens=8,
                              num_return_sequences=1, use_cache=False, output_scores=True, return_dict_in_generate=True)
        out["beam"] = {"sequences": beam.sequences.tolist(),
                       "sequences_scores": f32_list(beam.sequences_scores)}
        beam = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=4,
                              length_penalty=0.5, early_stopping=False, max_new_tokens=10,
                              num_return_sequences=1, use_cache=False, output_scores=True,
                              return_dict_in_generate=True)
        out["beam_lp"] = {"num_beams": 4, "length_penalty": 0.5, "max_new_tokens": 10,
                          "sequences": beam.sequences.tolist(),
                          "sequences_scores": f32_list(beam.sequences_scores)}
    rel = torch.arange(-60, 61)
    bucket = model.encoder.block[0].layer[0].SelfAttention._relative_position_bucket
    out["relative_position_buckets"] = {
        "relative_position": rel.tolist(),
        "cases": [{"bidirectional": bi, "num_buckets": nb, "max_distance": md,
                   "buckets": bucket(rel, bidirectional=bi, num_buckets=nb, max_distance=md).tolist()}
                  for bi in (True, False) for nb, md in ((BUCKETS, MAX_DISTANCE), (32, 128), (64, 50))],
    }
    out["tokenizer"] = {"texts": TOKENIZER_CHECK,
                        "input_ids": [tok.encode(t).ids for t in TOKENIZER_CHECK]}
    out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                       "safetensors": safetensors.__version__,
                       "tokenizers": tokenizers.__version__, "python": platform.python_version()}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = build_tokenizer()
    for name, spec in VARIANTS.items():
        model = build(name, spec)
        folder = os.path.join(args.out, name)
        save(model, spec, folder)
        tok.save(os.path.join(folder, "tokenizer.json"))
        exp = expected(model, tok)
        with open(os.path.join(folder, "expected.json"), "w") as f:
            json.dump(exp, f)
            f.write("\n")
        print(name, "greedy", exp["greedy"]["sequences"], "beam", exp["beam"]["sequences"],
              exp["beam"]["sequences_scores"])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A tiny RANDOM RoBERTa encoder + byte-level BPE tokenizer, and its expected outputs, as a test fixture.

Regenerates tests/fixtures/tiny-roberta/ (deterministic, seeded, CPU only, no downloads):

* config.json        HF layout (`RobertaModel.save_pretrained`), model_type "roberta", architectures ["RobertaModel"]
* model.safetensors  f32, written by `RobertaModel.save_pretrained`: tensor names have NO "roberta." prefix
                     ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight", ...,
                     "pooler.dense.weight"), the layout of a bare `RobertaModel` / `AutoModel` checkpoint. A
                     `RobertaForSequenceClassification` checkpoint (e.g. roberta-base on the hub) prefixes "roberta.".
* tokenizer.json     byte-level BPE trained here with the `tokenizers` library on SENTENCES; RoBERTa layout:
                     <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4, ByteLevel pre-tokenizer (add_prefix_space=false),
                     RobertaProcessing post-processor (<s> ... </s>), ByteLevel decoder, no padding/truncation
                     stored; vocab size == config.vocab_size.
* expected.json      for a right-padded batch of 3 sentences of different lengths: input_ids, attention_mask and
                     last_hidden_state computed by transformers (fp32, eval, eager attention)
                       "ids":    from input_ids (RoBERTa positions from ids: pad -> 1, tokens -> 2, 3, ...)
                       "prompt": from inputs_embeds = [P ; word_embeddings(input_ids)], P = 4 random seeded rows
                                 (stored), attention mask prepended with ones, no position_ids/token_type_ids
                                 passed (what PEFT prompt tuning feeds the encoder). See "notes".

Weights: transformers' init (N(0, 0.02), LayerNorm 1/0, zero biases) makes every layer nearly linear and
attention nearly uniform, which makes a weak test. After init every tensor is redrawn from a seeded
generator: matrices/embeddings N(0, 0.2), biases N(0, 0.1), LayerNorm weight 1 + N(0, 0.1), bias N(0, 0.1);
the padding rows (index pad_token_id = 1) of word and position embeddings stay zero, as nn.Embedding(padding_idx)
leaves them.

Floats in JSON are f32 values written with the shortest decimal that round-trips to the same f32
(parse as f64, cast to f32 → bit-exact).

Usage: python3 tests/reference/tiny_roberta.py [--out DIR]
Needs: torch, transformers, tokenizers, safetensors (versions used are recorded in expected.json).
"""
import argparse
import hashlib
import json
import os
import platform
import sys

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import RobertaConfig, RobertaModel

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "fixtures", "tiny-roberta")

SEED = 20250101
VOCAB_SIZE = 400  # 261 = 256 byte symbols + 5 specials, then 139 merges
HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 64
PAD_ID = 1
# RoBERTa reserves positions 0..pad_id (fairseq make_positions): positions start at pad_id + 1 = 2, so
# max_position_embeddings = 64 + 2 = 66 allows sequences (prompt + input) of up to 64 tokens, as roberta-base's
# 514 = 512 + 2.
MAX_LEN = 64
MAX_POS = MAX_LEN + PAD_ID + 1
N_PROMPT = 4
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

SENTENCES = [
    "The cat sat on the mat.",
    "A dog ran across the park in the morning.",
    "She reads a book every night before bed.",
    "The weather is cold and wet today.",
    "We walked to the station and took the train.",
    "This movie was funny, warm and very well made.",
    "The film is boring and far too long.",
    "I did not like the ending at all.",
    "What a wonderful performance by the whole cast!",
    "The plot makes no sense, but the music is great.",
    "He cooked pasta with tomatoes and fresh basil.",
    "The children played in the garden until dark.",
    "Our team won the match after extra time.",
    "Please close the door when you leave the room.",
    "The river flows slowly through the old town.",
    "My brother works at a small bakery downtown.",
    "The meeting was moved to Thursday afternoon.",
    "Is this the right way to the museum?",
    "They planted three apple trees last spring.",
    "The new phone has a bright screen and a long battery life.",
    "It rained all weekend, so we stayed inside.",
    "The teacher asked the students a hard question.",
    "A quiet street, a small cafe, and a cup of coffee.",
    "The story is sad, but the actors are excellent.",
    "I would watch this film again with my friends.",
    "The service was slow and the food was cold.",
    "Birds sing in the trees early in the morning.",
    "The price of bread went up again this year.",
    "Can you help me carry these boxes upstairs?",
    "The museum opens at nine and closes at five.",
    "A gorgeous, witty, seductive movie that never loses its grip.",
    "The book was better than the movie, as usual.",
    "We need more time to finish the project.",
    "Snow covered the hills and the roads were closed.",
    "The old man told us a story about the sea.",
    "The results were clear: the new method works better.",
    "Nobody expected the ending; it was a real surprise.",
    "The cafe on the corner makes the best croissants.",
    "Two trains left the station at the same time.",
    "The lazy dog slept in the sun all afternoon.",
]

# The expected-output batch: three lengths, one with a word and a character ("é") the training text never saw,
# so the byte fallback of byte-level BPE is exercised.
BATCH = [
    "The cat sat on the mat.",
    "A wonderful movie!",
    "The café was quiet; a zebra slept.",
]


def f32_list(t):
    """Nested lists of floats, each the shortest decimal that round-trips to the same f32."""
    a = t.detach().cpu().to(torch.float32).numpy()
    # str(np.float32) is the shortest round-trip repr of the f32; float() of it is the f64 nearest that decimal,
    # which json writes back as the same short string.
    flat = [float(str(v)) for v in a.reshape(-1)]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def build_tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None, dropout=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        special_tokens=[
            AddedToken("<s>", special=True),
            AddedToken("<pad>", special=True),
            AddedToken("</s>", special=True),
            AddedToken("<unk>", special=True),
            AddedToken("<mask>", lstrip=True, special=True),
        ],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return tok


def build_model():
    config = RobertaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=MAX_POS,
        type_vocab_size=1,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        pad_token_id=PAD_ID,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(SEED)
    model = RobertaModel(config, add_pooling_layer=True)
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        model.embeddings.word_embeddings.weight[PAD_ID].zero_()
        model.embeddings.position_embeddings.weight[PAD_ID].zero_()
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tok = build_tokenizer()
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tok = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))

    model = build_model()
    model.save_pretrained(out_dir, safe_serialization=True)
    for extra in ("generation_config.json",):
        p = os.path.join(out_dir, extra)
        if os.path.exists(p):
            os.remove(p)
    st_path = os.path.join(out_dir, "model.safetensors")
    os.chmod(st_path, 0o644)  # save_pretrained writes 0600
    with safetensors.safe_open(st_path, "pt") as f:
        names = sorted(f.keys())
        dtypes = {str(f.get_tensor(k).dtype) for k in names}
    assert dtypes == {"torch.float32"}, dtypes
    assert not any(n.startswith("roberta.") for n in names), names

    # Reload exactly as a user would (AutoModel on the folder) and compute from the reloaded model.
    model = transformers.AutoModel.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert type(model).__name__ == "RobertaModel"

    # Tokenize with the `tokenizers` library (dynamic right padding with <pad> = 1), and check transformers'
    # fast tokenizer on the same file agrees.
    tok_pad = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    tok_pad.enable_padding(pad_id=PAD_ID, pad_token="<pad>", direction="right")
    encs = tok_pad.encode_batch(BATCH)
    ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long)
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(out_dir, "tokenizer.json"),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        sep_token="</s>", cls_token="<s>",
    )
    hf = hf_tok(BATCH, padding=True, return_tensors="pt")
    assert torch.equal(hf["input_ids"], ids) and torch.equal(hf["attention_mask"], mask)
    lengths = [int(m.sum()) for m in mask]
    assert len(set(lengths)) == 3, lengths
    b, s = ids.shape
    assert N_PROMPT + s <= MAX_LEN

    g = torch.Generator().manual_seed(SEED + 1)
    prompt = (0.2 * torch.randn(N_PROMPT, HIDDEN, generator=g)).to(torch.float32)

    with torch.no_grad():
        # (a) from ids
        hs_ids = model(input_ids=ids, attention_mask=mask).last_hidden_state
        pos_ids = model.embeddings.create_position_ids_from_input_ids(ids, PAD_ID)
        hs_ids_explicit = model(input_ids=ids, attention_mask=mask, position_ids=pos_ids).last_hidden_state
        assert torch.equal(hs_ids, hs_ids_explicit)

        # (b) from inputs_embeds = [P ; E], mask = [1 ; mask], no position_ids / token_type_ids (PEFT's forward)
        wemb = model.embeddings.word_embeddings(ids)
        inputs_embeds = torch.cat([prompt.unsqueeze(0).expand(b, -1, -1), wemb], dim=1)
        pmask = torch.cat([torch.ones(b, N_PROMPT, dtype=mask.dtype), mask], dim=1)
        hs_p = model(inputs_embeds=inputs_embeds, attention_mask=pmask).last_hidden_state
        # What transformers does for inputs_embeds: positions padding_idx + 1 + arange(L) for every row (pads
        # included: it cannot see them), token types 0.
        pos_p = model.embeddings.create_position_ids_from_inputs_embeds(inputs_embeds, PAD_ID)
        expect_pos = (PAD_ID + 1 + torch.arange(N_PROMPT + s)).unsqueeze(0).expand(b, -1)
        assert torch.equal(pos_p, expect_pos)
        hs_p_explicit = model(
            inputs_embeds=inputs_embeds,
            attention_mask=pmask,
            position_ids=expect_pos,
            token_type_ids=torch.zeros(b, N_PROMPT + s, dtype=torch.long),
        ).last_hidden_state
        assert torch.equal(hs_p, hs_p_explicit)
        # Sanity: the ids path equals the embeds path at non-pad rows only when positions agree; with right padding
        # the ids path gives pad rows position 1, the embeds path keeps counting.
        hs_e = model(inputs_embeds=wemb, attention_mask=mask).last_hidden_state
        m = mask.bool()
        max_diff_valid = (hs_e - hs_ids)[m].abs().max().item()
        assert max_diff_valid < 1e-5, max_diff_valid

    out = {
        "description": "tiny random RoBERTa (RobertaModel, fp32, eval, eager attention) last_hidden_state for a "
        "right-padded batch of 3 sentences: 'ids' from input_ids, 'prompt' from inputs_embeds = "
        "[prompt_embeddings ; word_embeddings(input_ids)] with the attention mask prepended with ones (PEFT prompt "
        "tuning). Rows at padded positions (attention_mask 0) are included; compare only mask==1 rows if your "
        "attention differs there.",
        "generator": "tests/reference/tiny_roberta.py",
        "seed": SEED,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
        "files_sha256": {
            n: sha256(os.path.join(out_dir, n)) for n in ("config.json", "model.safetensors", "tokenizer.json")
        },
        "weight_names": names,
        "weight_name_prefix": "",
        "notes": {
            "float_format": "each float is the shortest decimal that round-trips to the f32 value (parse as f64, "
            "cast to f32: bit-exact)",
            "weight_names": "RobertaModel.save_pretrained writes names WITHOUT a 'roberta.' prefix "
            "(embeddings.*, encoder.layer.N.*, pooler.dense.*). Checkpoints of the task heads "
            "(RobertaForSequenceClassification etc.) use 'roberta.' + the same names.",
            "positions_from_ids": "RobertaEmbeddings.create_position_ids_from_input_ids: "
            "pos = cumsum(ids != pad) * (ids != pad) + pad_token_id, i.e. tokens get 2, 3, ... and pad tokens get "
            "1 (= padding_idx, whose embedding row is zero). Stored in ids.position_ids.",
            "positions_from_inputs_embeds": "transformers "
            + transformers.__version__
            + ": RobertaEmbeddings.create_position_ids_from_inputs_embeds gives "
            "padding_idx + 1 + arange(L) = 2, 3, ..., L+1 for EVERY row (it cannot see padding), counted over "
            "prompt + input; verified equal to passing these position_ids explicitly. So the first prompt row has "
            "position 2 and the first real token (<s>) position 2 + num_virtual_tokens. Pad rows get ordinary "
            "positions (not 1), so last_hidden_state at pad rows differs from the ids path; valid rows are what "
            "matter. PEFT's PeftModelForFeatureExtraction.forward passes no position_ids (it drops any given, "
            "with a warning) and no token_type_ids, so this is exactly what PEFT prompt tuning computes.",
            "token_type_ids": "none passed: RobertaEmbeddings gathers its zero buffer, so type 0 everywhere "
            "(type_vocab_size 1).",
            "max_position_embeddings": f"{MAX_POS} = {MAX_LEN} + pad_token_id + 1: at most {MAX_LEN} tokens "
            "(prompt + input) per sequence.",
            "pooler": "model.safetensors includes pooler.dense.* (RobertaModel default add_pooling_layer=True), "
            "not used by last_hidden_state.",
            "init": "weights redrawn after init (see the generator's docstring); padding rows of word and position "
            "embeddings are zero.",
        },
        "config": {
            "vocab_size": VOCAB_SIZE,
            "hidden_size": HIDDEN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "intermediate_size": INTERMEDIATE,
            "max_position_embeddings": MAX_POS,
            "pad_token_id": PAD_ID,
            "layer_norm_eps": 1e-5,
            "hidden_act": "gelu",
        },
        "sentences": BATCH,
        "tokens": [e.tokens for e in encs],
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "lengths": lengths,
        "ids": {
            "position_ids": pos_ids.tolist(),
            "shape": list(hs_ids.shape),
            "last_hidden_state": f32_list(hs_ids),
        },
        "prompt": {
            "num_virtual_tokens": N_PROMPT,
            "prompt_embeddings": f32_list(prompt),
            "attention_mask": pmask.tolist(),
            "position_ids": pos_p[0].tolist(),
            "token_type_ids": "zeros",
            "shape": list(hs_p.shape),
            "last_hidden_state": f32_list(hs_p),
        },
    }
    path = os.path.join(out_dir, "expected.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    total = 0
    for n in sorted(os.listdir(out_dir)):
        size = os.path.getsize(os.path.join(out_dir, n))
        total += size
        print(f"{n}: {size} bytes")
    print(f"wrote {out_dir} ({total} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()

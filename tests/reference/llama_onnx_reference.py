#!/usr/bin/env python3
"""Reference logits of a tiny random Llama for `crates/adept-e2e/tests/decoder_onnx.rs`.

Builds a seeded `transformers.LlamaForCausalLM` (vocab 96, d 32, 2 layers, 4 heads, 2 key/value
heads, head_dim 8, ffn 64, tied embeddings, eager attention, float32) with weights drawn larger
than the default initialisation (std 0.2, RMSNorm weights 1 + 0.1·N(0,1)) so logits differ by
more than the test tolerances, and writes into `tests/fixtures/llama-onnx/`:

* `model.safetensors`: its weights under Hugging Face names (`model.embed_tokens.weight`,
  `model.layers.{i}.self_attn.q_proj.weight`, ...; tied, so no `lm_head.weight`);
* `expected.safetensors`:
  - `input_ids` / `attention_mask` / `position_ids` (int64 [2, 5]): two prompts of 5 and 3
    tokens, left padded (pad id 0), positions `cumsum(mask) - 1` (1 at padding, as `generate`);
  - `logits` [2, 5, 96]: their logits (padded rows undefined);
  - `step_ids` / `step_position_ids` (int64 [2, 1]), `step_mask` (int64 [2, 6]): one new token
    each, run with the cache of the first call; `step_logits` [2, 1, 96];
  - `prompt` [2, 32]: two random rows (a soft prompt), and `prompt_logits` [2, 7, 96]: the
    logits of `inputs_embeds = [prompt rows; padded input embeddings]` with mask
    `[1, 1, attention_mask]` and positions `cumsum(mask) - 1`, given to the model directly as
    `inputs_embeds` (the prompt as virtual tokens at positions 0 and 1, the pads after it);
  - `prompt_cache.{i}.key|value` [1, 2, 2, 8]: the prompt's keys/values alone (positions 0, 1).

Run once (needs torch + transformers), then commit the fixtures:
    /tmp/torchenv/bin/python tests/reference/llama_onnx_reference.py [out_dir]
"""
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = (
    pathlib.Path(sys.argv[1])
    if len(sys.argv) > 1
    else pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "llama-onnx"
)


def positions(mask):
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def main():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    OUT.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(weights, str(OUT / "model.safetensors"))

    ids = torch.tensor([[5, 17, 33, 8, 61], [0, 0, 44, 9, 70]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    pos = positions(mask)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        step_ids = torch.tensor([[23], [88]])
        step_mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
        step_pos = pos[:, -1:] + 1
        step = model(
            input_ids=step_ids,
            attention_mask=step_mask,
            position_ids=step_pos,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        prompt = 0.2 * torch.randn(2, 32)
        embeds = model.model.embed_tokens(ids)
        p_embeds = torch.cat([prompt.unsqueeze(0).expand(2, -1, -1), embeds], dim=1)
        p_mask = torch.cat([torch.ones(2, 2, dtype=mask.dtype), mask], dim=1)
        p_out = model(
            inputs_embeds=p_embeds,
            attention_mask=p_mask,
            position_ids=positions(p_mask),
        )
        # The prompt alone (batch 1, positions 0..l): its keys/values per layer.
        p_only = model(
            inputs_embeds=prompt.unsqueeze(0),
            attention_mask=torch.ones(1, 2, dtype=mask.dtype),
            position_ids=torch.tensor([[0, 1]]),
            use_cache=True,
        )
    expected = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": pos,
        "logits": out.logits,
        "step_ids": step_ids,
        "step_mask": step_mask,
        "step_position_ids": step_pos,
        "step_logits": step.logits,
        "prompt": prompt,
        "prompt_logits": p_out.logits,
    }
    for i, layer in enumerate(p_only.past_key_values.layers):
        expected[f"prompt_cache.{i}.key"] = layer.keys
        expected[f"prompt_cache.{i}.value"] = layer.values
    save_file({k: v.contiguous() for k, v in expected.items()}, str(OUT / "expected.safetensors"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

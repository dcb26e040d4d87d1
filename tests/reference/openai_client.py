"""The official `openai` Python client against `adept serve` (crates/adept-e2e/tests/serve.rs).

Usage: [OPENAI_API_KEY=KEY] openai_client.py BASE_URL MODEL PROMPT MAX_TOKENS
Prints one JSON object: the model ids the client lists, and the greedy completion of PROMPT
through completions and chat completions, whole and streamed, plus the error an unsupported
option gets and the error a wrong API key gets. The client sends OPENAI_API_KEY (or "unused")
as `Authorization: Bearer`, as it does against OpenAI.
"""
import json
import os
import sys

from openai import OpenAI

base, model, prompt, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
key = os.environ.get("OPENAI_API_KEY") or "unused"
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)
out = {"models": [m.id for m in client.models.list()]}
r = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
out["completion"] = r.choices[0].text
out["finish_reason"] = r.choices[0].finish_reason
out["usage"] = [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens]
stream = client.completions.create(
    model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True
)
out["completion_streamed"] = "".join(c.choices[0].text for c in stream)
messages = [{"role": "user", "content": prompt}]
r = client.chat.completions.create(
    model=model, messages=messages, max_tokens=max_tokens, temperature=0
)
out["chat"] = r.choices[0].message.content
stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True
)
out["chat_streamed"] = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
try:
    client.completions.create(model=model, prompt=prompt, n=2)
    out["n2"] = "accepted"
except Exception as e:  # the client raises its own APIStatusError subclasses
    out["n2"] = [getattr(e, "status_code", None), str(e)]
wrong = OpenAI(base_url=base, api_key=key + "-wrong", max_retries=0, timeout=60)
try:
    wrong.models.list()
    out["wrong_key"] = "accepted"
except Exception as e:
    out["wrong_key"] = [getattr(e, "status_code", None), type(e).__name__, str(e)]
print(json.dumps(out))

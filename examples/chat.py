"""Chat with a fine-tuned model through the official openai SDK, streaming and not.

    TUNEFORGE_URL=http://127.0.0.1:8000/v1 TUNEFORGE_API_KEY=tf-... python examples/chat.py ft:...

Needs an inference worker (`tuneforge up` runs one; deployed: `tuneforge worker --queue inference`).
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("TUNEFORGE_URL", "http://127.0.0.1:8000/v1"), api_key=os.environ["TUNEFORGE_API_KEY"]
)
model = sys.argv[1]
messages = [{"role": "user", "content": "Speak, friend, and enter."}]

reply = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)  # type: ignore[arg-type]
print("reply:", repr(reply.choices[0].message.content), reply.choices[0].finish_reason)
assert reply.usage is not None
print("usage:", reply.usage.prompt_tokens, "+", reply.usage.completion_tokens, "tokens")

print("stream: ", end="")
for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0, stream=True):  # type: ignore[arg-type]
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()

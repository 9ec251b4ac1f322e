"""vLLM's answers leave as OpenAI's document types them (no server needed: the rewrite is a pure function)."""

from __future__ import annotations

from typing import Any

from tests.conformance import Conformance
from tuneforge.app.inference.schemas import SYSTEM_FINGERPRINT
from tuneforge.app.inference.vllm.service import _rename


def test_a_vllm_reply_gets_a_fingerprint_and_a_refusal_and_validates() -> None:
    # The fields vLLM 0.x sends for a chat completion, its own extras included.
    reply: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "tuneforge-adapter-0",
        "system_fingerprint": None,
        "prompt_logprobs": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Blue.", "tool_calls": []},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    out = _rename(reply, "ft:base:org::ftjob-1")
    assert out["system_fingerprint"] == SYSTEM_FINGERPRINT and out["choices"][0]["message"]["refusal"] is None
    assert "prompt_logprobs" not in out and "stop_reason" not in out["choices"][0]
    assert Conformance().errors("/components/schemas/CreateChatCompletionResponse", out) == []
    chunk = _rename({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}, "x")
    assert chunk["system_fingerprint"] == SYSTEM_FINGERPRINT

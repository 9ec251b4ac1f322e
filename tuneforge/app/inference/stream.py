"""Server-sent events in OpenAI's streaming shapes, ending with `data: [DONE]`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from tuneforge.app.core.errors import APIError, envelope
from tuneforge.app.inference.schemas import SYSTEM_FINGERPRINT
from tuneforge.app.inference.service import Generation


def _sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def _chat_chunk(gen: Generation, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    return {
        "id": gen.id,
        "object": "chat.completion.chunk",
        "created": gen.created,
        "model": gen.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def _text_chunk(gen: Generation, text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": gen.id,
        "object": "text_completion",
        "created": gen.created,
        "model": gen.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }


async def sse_events(gen: Generation, *, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    """The chunks of one streamed request, awaited on the event loop. An error after the stream
    started (a timeout) is sent as an `error` event, which the openai SDK raises as an APIError, and
    the stream ends. A client that goes away closes the events, which cancels the request at once."""
    if chat:
        yield _sse(_chat_chunk(gen, {"role": "assistant", "content": ""}, None))
    try:
        async with contextlib.aclosing(gen.events()) as events:
            async for event in events:
                if event["type"] == "delta":
                    text = event["text"]
                    yield _sse(_chat_chunk(gen, {"content": text}, None) if chat else _text_chunk(gen, text, None))
                elif event["type"] == "done":
                    finish = str(event["finish_reason"])
                    yield _sse(_chat_chunk(gen, {}, finish) if chat else _text_chunk(gen, "", finish))
                    if include_usage:
                        usage = _chat_chunk(gen, {}, None) if chat else _text_chunk(gen, "", None)
                        usage["choices"] = []
                        usage["usage"] = event["usage"]
                        yield _sse(usage)
    except APIError as exc:
        yield _sse(envelope(exc.message, exc.type, exc.param, exc.code))
    yield _sse("[DONE]")

"""Forward a chat or completion request to vLLM, after Tuneforge's own checks (tuneforge/app/inference/service.py
resolved the model for the organization and applied the limits).

The body goes through as the client sent it (what Tuneforge's schema accepted: `n`, `logprobs` and
`top_logprobs`, `response_format`, `tools` and `tool_choice` included), with vLLM's name for the model and
`max_tokens` capped. The answer comes back as vLLM wrote it, with the client's `model` name put back in,
streamed chunk by chunk when the client streams."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi.responses import JSONResponse, StreamingResponse

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import APIError, InvalidRequest, envelope
from tuneforge.app.inference.resolver import Target
from tuneforge.app.inference.schemas import SYSTEM_FINGERPRINT, ChatCompletionRequest, CompletionRequest
from tuneforge.app.inference.vllm import client as vllm
from tuneforge.app.inference.vllm.adapters import AdapterPool, pool

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# What vLLM adds to OpenAI's shapes that a client of Tuneforge has no use for.
_VLLM_ONLY = (
    "prompt_logprobs",
    "prompt_token_ids",
    "prompt_text",
    "kv_transfer_params",
    "ec_transfer_params",
    "metrics",
    "service_tier",
)
_VLLM_ONLY_CHOICE = ("token_ids", "routed_experts", "stop_reason")
_base_of: dict[str, tuple[str, float]] = {}
BASE_TTL_SECONDS = 30.0


async def served_base(settings: Settings) -> str:
    """The base model vLLM serves (its `--served-model-name`), asked once every 30 s."""
    cached = _base_of.get(settings.vllm_url)
    if cached and time.monotonic() - cached[1] < BASE_TTL_SECONDS:
        return cached[0]
    try:
        r = await vllm.client(settings).get("/v1/models")
    except httpx.HTTPError as exc:
        pool(settings).forget_all()
        raise vllm.transport_error(settings, exc) from exc
    if r.status_code != 200:
        raise vllm.error_of(r.status_code, r.content, settings)
    models = r.json().get("data", [])
    base = next((m["id"] for m in models if not m.get("parent")), None)
    if base is None:
        raise vllm.unavailable(settings, "vLLM lists no base model")
    _base_of[settings.vllm_url] = (base, time.monotonic())
    return base


def _payload(body: ChatCompletionRequest | CompletionRequest, settings: Settings, name: str) -> dict[str, Any]:
    payload = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    payload["model"] = name
    limit = body.limit()
    payload.pop("max_completion_tokens", None)
    payload["max_tokens"] = limit or settings.max_inference_tokens
    if isinstance(body, ChatCompletionRequest):
        for message in payload["messages"]:
            if message["role"] == "developer":  # chat templates know `system`, not OpenAI's newer name
                message["role"] = "system"
    return payload


def _rename(obj: dict[str, Any], model: str) -> dict[str, Any]:
    obj["model"] = model
    # OpenAI's document types `system_fingerprint` as a string and requires a chat message's `refusal`
    # (null when none); vLLM sends a null fingerprint and may leave `refusal` out (docs/api.md, "Conformance").
    if obj.get("system_fingerprint") is None:
        obj["system_fingerprint"] = SYSTEM_FINGERPRINT
    for k in _VLLM_ONLY:
        obj.pop(k, None)
    for choice in obj.get("choices") or []:
        if isinstance(choice, dict):
            for k in _VLLM_ONLY_CHOICE:
                choice.pop(k, None)
            if isinstance(choice.get("message"), dict):
                choice["message"].setdefault("refusal", None)
    return obj


async def forward(
    settings: Settings, target: Target, body: ChatCompletionRequest | CompletionRequest
) -> JSONResponse | StreamingResponse:
    """vLLM's answer to `body`, for the model the client named (`target`)."""
    base = await served_base(settings)
    if target.base != base:
        raise InvalidRequest(
            f"The model {target.model!r} is built on {target.base!r}; this server's vLLM serves {base!r}.",
            param="model",
            code="model_not_supported",
        )
    path = "/v1/chat/completions" if isinstance(body, ChatCompletionRequest) else "/v1/completions"
    adapters = pool(settings)
    if target.adapter is None:
        return await _send(settings, path, _payload(body, settings, base), target.model, body.stream)
    for attempt in range(2):
        async with adapters.use(target.adapter) as name:
            try:
                return await _send(settings, path, _payload(body, settings, name), target.model, body.stream)
            except _MissingModel:
                adapters.forget(name)  # vLLM restarted, or another API process unloaded it: load it again
                if attempt:
                    raise vllm.unavailable(settings, "the model could not be loaded") from None
    raise AssertionError("unreachable")


class _MissingModel(Exception):
    pass


async def _send(
    settings: Settings, path: str, payload: dict[str, Any], model: str, stream: bool
) -> JSONResponse | StreamingResponse:
    http = vllm.client(settings)
    request = http.build_request("POST", path, json=payload)
    try:
        r = await http.send(request, stream=stream)
    except httpx.HTTPError as exc:
        pool(settings).forget_all()
        raise vllm.transport_error(settings, exc) from exc
    if r.status_code != 200:
        body = await r.aread()
        await r.aclose()
        if vllm.is_missing_model(r.status_code, body):
            raise _MissingModel()
        raise vllm.error_of(r.status_code, body, settings)
    if not stream:
        return JSONResponse(_rename(r.json(), model))
    return StreamingResponse(_relay(r, model, settings), media_type="text/event-stream", headers=SSE_HEADERS)


async def _relay(r: httpx.Response, model: str, settings: Settings) -> AsyncIterator[str]:
    """vLLM's server-sent events with the client's model name; a vLLM that dies mid-stream ends the
    stream with an `error` event (the SDK raises it) and `[DONE]`. A client that goes away closes this
    generator, which closes the connection to vLLM, which aborts the request there."""
    try:
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data.strip() == "[DONE]":
                yield "data: [DONE]\n\n"
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict) and "error" not in chunk:
                chunk = _rename(chunk, model)
            yield f"data: {json.dumps(chunk)}\n\n"
    except httpx.HTTPError as exc:
        err: APIError = vllm.transport_error(settings, exc)
        yield f"data: {json.dumps(envelope(err.message, err.type, err.param, err.code))}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        await r.aclose()


__all__ = ["AdapterPool", "forward", "served_base"]

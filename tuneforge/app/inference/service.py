"""Chat and completion requests: resolve the model, publish the request to the inference queue,
and relay the worker's events (docs/serving.md). The API never loads a model.

Everything that waits for a worker is awaited on the event loop (tuneforge/app/inference/reply_reader.py);
only the short database lookup and the broker publish run in the thread pool. A request holds no
thread while a worker generates, so one tenant's chats cannot take the threads every other request
needs (their number in flight is capped per organization: tuneforge/app/core/limits.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from fastapi.responses import JSONResponse, StreamingResponse
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import GatewayTimeout, InvalidRequest, Unavailable, UpstreamError
from tuneforge.app.core.ids import new_id
from tuneforge.app.inference import prompt_limits, resolver
from tuneforge.app.inference.prompt_limits import PromptBound
from tuneforge.app.inference.replies import Event
from tuneforge.app.inference.reply_reader import ReplyReader, reply_reader
from tuneforge.app.inference.schemas import ChatCompletionRequest, CompletionRequest, FinishReason
from tuneforge.app.inference.vllm import service as vllm_service
from tuneforge.app.jobs.dispatch import producer
from tuneforge.contract.queue import send_infer

Kind = Literal["chat", "completion"]


@dataclass
class Generation:
    """A request the worker has accepted (its `start` event came back): read its events in order."""

    id: str
    model: str
    created: int
    prompt_tokens: int
    reader: ReplyReader
    deadline: float
    settings: Settings
    finished: bool = False
    closed: bool = False

    async def events(self) -> AsyncGenerator[Event, None]:
        """`delta` events, then one `done` event. A timeout or a worker error raises; either way the
        request is marked cancelled (so the worker stops) and its channel is dropped."""
        try:
            while True:
                event = await _next(self.reader, self.id, self.deadline, self.settings)
                if event["type"] == "error":
                    raise _error_of(event)
                yield event
                if event["type"] == "done":
                    self.finished = True
                    return
        finally:
            await self.close()

    async def close(self) -> None:
        """Drop the channel, and cancel the request unless it finished. Idempotent: a streamed
        response calls it once more when it ends, for a stream that never started reading."""
        if not self.closed:
            self.closed = True
            await _drop(self.reader, self.id, cancel=not self.finished)


async def _drop(reader: ReplyReader, request_id: str, *, cancel: bool) -> None:
    # Shielded: a client that went away cancels the task, and the worker must still be told to stop.
    with anyio.CancelScope(shield=True):
        if cancel:
            await reader.cancel(request_id)
        await reader.close(request_id)


def _timeout(settings: Settings) -> GatewayTimeout:
    return GatewayTimeout(
        f"The request did not finish within {settings.inference_timeout_seconds:g}s "
        "(TUNEFORGE_INFERENCE_TIMEOUT_SECONDS). Inference workers may be busy or not running; "
        "retry with a smaller max_tokens or later.",
        code="timeout",
    )


async def _next(reader: ReplyReader, request_id: str, deadline: float, settings: Settings) -> Event:
    remaining = deadline - time.time()
    try:
        event = await reader.pop(request_id, remaining) if remaining > 0 else None
    except (RedisError, OSError) as exc:
        raise Unavailable("The reply channel is unavailable; retry shortly.", code="broker_unavailable") from exc
    if event is None:
        raise _timeout(settings)
    return event


def _error_of(event: Event) -> UpstreamError:
    return UpstreamError(
        int(event.get("status", 500)),
        str(event.get("message", "inference failed")),
        param=event.get("param"),
        code=event.get("code"),
    )


def _prepare(
    session: Session, settings: Settings, org_id: str, body: ChatCompletionRequest | CompletionRequest
) -> tuple[resolver.Target, PromptBound | None]:
    """The model and its prompt bound: database and models-root reads, run in a thread."""
    try:
        target = resolver.resolve(session, settings, org_id, body.model)
    finally:
        session.close()  # no database connection is held while a worker generates
    return target, prompt_limits.bound_for(settings, target.base)


async def _checked_target(
    session: Session, settings: Settings, org_id: str, body: ChatCompletionRequest | CompletionRequest
) -> resolver.Target:
    """The organization's model for `body`, once the request passed every limit (either backend)."""
    prompt_limits.check_text(body)
    target, bound = await run_in_threadpool(_prepare, session, settings, org_id, body)
    limit = body.limit()
    if limit is not None and limit > settings.max_inference_tokens:
        raise InvalidRequest(
            f"{body.limit_param()} is {limit}; this server allows at most {settings.max_inference_tokens} "
            "(TUNEFORGE_MAX_INFERENCE_TOKENS).",
            param=body.limit_param(),
            code="max_tokens_too_large",
        )
    prompt_limits.check_length(body, bound)  # before a worker spends time tokenizing it
    return target


def _refuse_vllm_only(body: ChatCompletionRequest | CompletionRequest) -> None:
    """The inference workers generate one plain choice: what only vLLM serves is a 400 naming the field,
    never silently ignored."""
    param = body.vllm_only()
    if param is not None:
        raise InvalidRequest(
            f"{param} is served with TUNEFORGE_INFERENCE_BACKEND=vllm only; this server runs the built-in "
            "inference workers (docs/serving.md).",
            param=param,
            code="unsupported_parameter",
        )


async def forward_to_vllm(
    session: Session, settings: Settings, org_id: str, body: ChatCompletionRequest | CompletionRequest
) -> JSONResponse | StreamingResponse:
    """TUNEFORGE_INFERENCE_BACKEND=vllm: the same checks, then vLLM generates (tuneforge/app/inference/vllm/)."""
    target = await _checked_target(session, settings, org_id, body)
    return await vllm_service.forward(settings, target, body)


def _publish(settings: Settings, payload: dict[str, Any]) -> None:
    send_infer(producer(), payload, settings.inference_queue, expires=settings.inference_timeout_seconds)


async def start(
    session: Session,
    settings: Settings,
    org_id: str,
    body: ChatCompletionRequest | CompletionRequest,
) -> Generation:
    """Validate, publish, and wait for the worker to accept the prompt. Raises the 4xx/504 to answer."""
    _refuse_vllm_only(body)
    target = await _checked_target(session, settings, org_id, body)
    limit = body.limit()
    kind: Kind = "chat" if isinstance(body, ChatCompletionRequest) else "completion"
    request_id = new_id("chatcmpl" if kind == "chat" else "cmpl")
    deadline = time.time() + settings.inference_timeout_seconds
    payload: dict[str, Any] = {
        "id": request_id,
        "kind": kind,
        "base": target.base,
        "adapter": target.adapter,
        "max_tokens": limit or settings.max_inference_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stops(),
        "seed": body.seed,
        "deadline": deadline,
    }
    if isinstance(body, ChatCompletionRequest):
        payload["messages"] = [{"role": _role(m.role), "content": m.text()} for m in body.messages]
    else:
        payload["prompt"] = body.text()

    reader = reply_reader(settings)
    try:
        await run_in_threadpool(_publish, settings, payload)
    except Exception as exc:  # any broker failure is the same answer to the client
        raise Unavailable("The inference queue is unavailable; retry shortly.", code="broker_unavailable") from exc
    try:
        first = await _next(reader, request_id, deadline, settings)
    except BaseException:  # the 504, or this task cancelled: the worker must not start it
        await _drop(reader, request_id, cancel=True)
        raise
    if first["type"] != "start":
        await _drop(reader, request_id, cancel=False)
        raise _error_of(first)
    return Generation(
        id=request_id,
        model=target.model,
        created=int(time.time()),
        prompt_tokens=int(first["prompt_tokens"]),
        reader=reader,
        deadline=deadline,
        settings=settings,
    )


def _role(role: str) -> str:
    return "system" if role == "developer" else role


def _finish_reason(value: object) -> FinishReason:
    """A worker's finish reason, checked against the values the response may carry."""
    if value == "stop" or value == "length":
        return value
    raise UpstreamError(500, f"The inference worker reported an unknown finish reason {value!r}.", code="internal")


async def collect(gen: Generation) -> tuple[str, FinishReason, dict[str, int]]:
    """The whole text, the finish reason and the usage of a non-streamed request."""
    parts: list[str] = []
    async with contextlib.aclosing(gen.events()) as events:  # closed (channel dropped) on return
        async for event in events:
            if event["type"] == "delta":
                parts.append(event["text"])
            elif event["type"] == "done":
                return "".join(parts), _finish_reason(event["finish_reason"]), dict(event["usage"])
    raise _timeout(gen.settings)  # unreachable: events() ends with `done` or raises

"""Chat and completion requests: resolve the model, publish the request to the inference queue,
and relay the worker's events (docs/serving.md). The API never loads a model."""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import GatewayTimeout, InvalidRequest, Unavailable, UpstreamError
from tuneforge.app.core.ids import new_id
from tuneforge.app.inference import resolver
from tuneforge.app.inference.replies import Event, ReplyChannel, reply_channel
from tuneforge.app.inference.schemas import ChatCompletionRequest, CompletionRequest, FinishReason
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
    channel: ReplyChannel
    deadline: float
    settings: Settings
    finished: bool = False

    def events(self) -> Generator[Event, None, None]:
        """`delta` events, then one `done` event. A timeout or a worker error raises; either way the
        request is marked cancelled (so the worker stops) and its channel is dropped."""
        try:
            while True:
                event = _next(self.channel, self.id, self.deadline, self.settings)
                if event["type"] == "error":
                    raise _error_of(event)
                yield event
                if event["type"] == "done":
                    self.finished = True
                    return
        finally:
            if not self.finished:
                self.channel.cancel(self.id)
            self.channel.close(self.id)


def _timeout(settings: Settings) -> GatewayTimeout:
    return GatewayTimeout(
        f"The request did not finish within {settings.inference_timeout_seconds:g}s "
        "(TUNEFORGE_INFERENCE_TIMEOUT_SECONDS). Inference workers may be busy or not running; "
        "retry with a smaller max_tokens or later.",
        code="timeout",
    )


def _next(channel: ReplyChannel, request_id: str, deadline: float, settings: Settings) -> Event:
    remaining = deadline - time.time()
    event = channel.pop(request_id, remaining) if remaining > 0 else None
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


def start(
    session: Session,
    settings: Settings,
    org_id: str,
    body: ChatCompletionRequest | CompletionRequest,
) -> Generation:
    """Validate, publish, and wait for the worker to accept the prompt. Raises the 4xx/504 to answer."""
    target = resolver.resolve(session, settings, org_id, body.model)
    session.close()  # no database connection is held while a worker generates

    limit = body.limit()
    if limit is not None and limit > settings.max_inference_tokens:
        raise InvalidRequest(
            f"{body.limit_param()} is {limit}; this server allows at most {settings.max_inference_tokens} "
            "(TUNEFORGE_MAX_INFERENCE_TOKENS).",
            param=body.limit_param(),
            code="max_tokens_too_large",
        )
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

    channel = reply_channel(settings)
    try:
        send_infer(producer(), payload, settings.inference_queue, expires=settings.inference_timeout_seconds)
    except Exception as exc:  # any broker failure is the same answer to the client
        raise Unavailable("The inference queue is unavailable; retry shortly.", code="broker_unavailable") from exc
    try:
        first = _next(channel, request_id, deadline, settings)
    except GatewayTimeout:
        channel.cancel(request_id)
        channel.close(request_id)
        raise
    if first["type"] != "start":
        channel.close(request_id)
        raise _error_of(first)
    return Generation(
        id=request_id,
        model=target.model,
        created=int(time.time()),
        prompt_tokens=int(first["prompt_tokens"]),
        channel=channel,
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


def collect(gen: Generation) -> tuple[str, FinishReason, dict[str, int]]:
    """The whole text, the finish reason and the usage of a non-streamed request."""
    parts: list[str] = []
    for event in gen.events():
        if event["type"] == "delta":
            parts.append(event["text"])
        elif event["type"] == "done":
            return "".join(parts), _finish_reason(event["finish_reason"]), dict(event["usage"])
    raise _timeout(gen.settings)  # unreachable: events() ends with `done` or raises

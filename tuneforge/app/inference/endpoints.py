"""POST /v1/chat/completions and /v1/completions (OpenAI's shapes), served by inference workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from tuneforge.app.core.schemas import error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.inference import service
from tuneforge.app.inference.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    FinishReason,
    Usage,
)
from tuneforge.app.inference.stream import sse_events

router = APIRouter(prefix="/v1", tags=["inference"], responses=error_responses(404, 503, 504))

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
R = TypeVar("R", ChatCompletion, Completion)


@router.post("/chat/completions", response_model=ChatCompletion)
def chat_completions(
    body: ChatCompletionRequest, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> ChatCompletion | StreamingResponse:
    """Chat with a base model, a fine-tuned model (`ft:...`) or one of its checkpoints."""
    gen = service.start(session, settings, principal.organization_id, body)
    return _stream_or_collect(
        gen,
        body,
        lambda text, finish, usage: ChatCompletion(
            id=gen.id,
            created=gen.created,
            model=gen.model,
            choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason=finish)],
            usage=usage,
        ),
    )


@router.post("/completions", response_model=Completion)
def completions(
    body: CompletionRequest, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> Completion | StreamingResponse:
    """Continue a prompt (no chat template)."""
    gen = service.start(session, settings, principal.organization_id, body)
    return _stream_or_collect(
        gen,
        body,
        lambda text, finish, usage: Completion(
            id=gen.id,
            created=gen.created,
            model=gen.model,
            choices=[CompletionChoice(text=text, finish_reason=finish)],
            usage=usage,
        ),
    )


def _stream_or_collect(
    gen: service.Generation,
    body: ChatCompletionRequest | CompletionRequest,
    reply: Callable[[str, FinishReason, Usage], R],
) -> R | StreamingResponse:
    """Server-sent chunks when the request streams; otherwise the whole text, built into `reply`."""
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = sse_events(gen, chat=isinstance(body, ChatCompletionRequest), include_usage=include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    text, finish, usage = service.collect(gen)
    return reply(text, finish, Usage(**usage))

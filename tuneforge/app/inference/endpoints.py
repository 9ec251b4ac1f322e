"""POST /v1/chat/completions and /v1/completions (OpenAI's shapes), served by inference workers.

Both routes are async and await the worker's reply on the event loop; each request holds one of its
organization's in-flight slots until its response is sent (tuneforge/app/core/limits.py), and its body
is capped while it arrives (body_cap.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from tuneforge.app.core.limits import InFlightKind, hold
from tuneforge.app.core.schemas import error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.inference import service
from tuneforge.app.inference.body_cap import CappedBodyRoute
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

router = APIRouter(
    prefix="/v1",
    tags=["inference"],
    responses=error_responses(404, 413, 429, 503, 504),
    route_class=CappedBodyRoute,
)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
R = TypeVar("R", ChatCompletion, Completion)


async def inference_slot(settings: SettingsDep, principal: PrincipalDep) -> AsyncIterator[None]:
    """One of the organization's chat/completion slots, held until the response has been sent."""
    async with hold(settings, principal.organization_id, InFlightKind.INFERENCE):
        yield


InferenceSlot = Annotated[None, Depends(inference_slot)]


class GenerationStream(StreamingResponse):
    """A streamed reply that closes its generation however the response ends, even when the client
    left before the first chunk was read (then the worker is told to stop at once)."""

    def __init__(self, gen: service.Generation, chunks: AsyncIterator[str]) -> None:
        super().__init__(chunks, media_type="text/event-stream", headers=SSE_HEADERS)
        self.generation = gen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.generation.close()


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(
    body: ChatCompletionRequest,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    _slot: InferenceSlot,
) -> ChatCompletion | JSONResponse | StreamingResponse:
    """Chat with a base model, a fine-tuned model (`ft:...`) or one of its checkpoints."""
    if settings.inference_backend == "vllm":
        return await service.forward_to_vllm(session, settings, principal.organization_id, body)
    gen = await service.start(session, settings, principal.organization_id, body)
    return await _stream_or_collect(
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
async def completions(
    body: CompletionRequest,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    _slot: InferenceSlot,
) -> Completion | JSONResponse | StreamingResponse:
    """Continue a prompt (no chat template)."""
    if settings.inference_backend == "vllm":
        return await service.forward_to_vllm(session, settings, principal.organization_id, body)
    gen = await service.start(session, settings, principal.organization_id, body)
    return await _stream_or_collect(
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


async def _stream_or_collect(
    gen: service.Generation,
    body: ChatCompletionRequest | CompletionRequest,
    reply: Callable[[str, FinishReason, Usage], R],
) -> R | StreamingResponse:
    """Server-sent chunks when the request streams; otherwise the whole text, built into `reply`."""
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = sse_events(gen, chat=isinstance(body, ChatCompletionRequest), include_usage=include_usage)
        return GenerationStream(gen, events)
    text, finish, usage = await service.collect(gen)
    return reply(text, finish, Usage(**usage))

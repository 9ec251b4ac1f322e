"""Validate and run graders. Checks a grader against this server (python graders on, judges it serves),
and runs it on one sample: judges through the inference path (tuneforge/app/inference/service.py: the
same queue and workers as `/v1/chat/completions`), python graders in the sandbox."""

from __future__ import annotations

import inspect
from typing import Any

from anyio import from_thread, to_thread
from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import APIError, InvalidRequest
from tuneforge.app.graders.schemas import GraderRunMetadata, GraderRunRequest, GraderRunResponse
from tuneforge.app.inference import service as inference
from tuneforge.app.inference.schemas import ChatCompletionRequest
from tuneforge.contract.graders.sandbox import SandboxLimits
from tuneforge.contract.graders.scoring import GraderRuntime, JudgeError, grade
from tuneforge.contract.graders.shapes import AnyGrader, PythonGrader, SamplingParams, leaves, to_json

# Judge replies longer than this are not needed to read a score or a label.
JUDGE_MAX_TOKENS = 64

# OpenAI's run response requires these beside the error flags, null unless a grader set one.
ERROR_DETAILS = (
    "python_grader_server_error_type",
    "python_grader_runtime_error_details",
    "model_grader_server_error_details",
)


def sandbox_limits(settings: Settings) -> SandboxLimits | None:
    if not settings.python_grader_enabled:
        return None
    return SandboxLimits(
        timeout_seconds=settings.python_grader_timeout_seconds,
        cpu_seconds=settings.python_grader_cpu_seconds,
        memory_mb=settings.python_grader_memory_mb,
        output_bytes=settings.python_grader_output_bytes,
    )


def validate(grader: AnyGrader, settings: Settings) -> dict[str, Any]:
    """The grader as it will run; a python grader on a server that has them off is a 400."""
    for path, g in leaves(grader):
        if isinstance(g, PythonGrader) and not settings.python_grader_enabled:
            raise InvalidRequest(
                "python graders are turned off on this server (TUNEFORGE_PYTHON_GRADER_ENABLED; docs/security.md).",
                param=path,
                code="python_grader_disabled",
            )
    return to_json(grader)


async def _ask(
    session: Session, settings: Settings, org_id: str, model: str, messages: list[dict[str, str]], params: Any
) -> str:
    body = ChatCompletionRequest.model_validate(
        {
            "model": model,
            "messages": messages,
            "max_tokens": (params.max_completions_tokens if params else None) or JUDGE_MAX_TOKENS,
            "temperature": (params.temperature if params and params.temperature is not None else 0.0),
            **({"seed": params.seed} if params and params.seed is not None else {}),
        }
    )
    try:
        # The inference service is becoming async (its replies awaited on the event loop); either form works.
        started = inference.start(session, settings, org_id, body)
        gen = await started if inspect.isawaitable(started) else started
        collected = inference.collect(gen)
        text, _, _ = await collected if inspect.isawaitable(collected) else collected
    except APIError as exc:
        raise JudgeError(str(exc)) from exc
    return text


async def run(session: Session, settings: Settings, org_id: str, body: GraderRunRequest) -> GraderRunResponse:
    validate(body.grader, settings)

    def judge(model: str, messages: list[dict[str, str]], params: SamplingParams | None) -> str:
        return from_thread.run(_ask, session, settings, org_id, model, messages, params)

    runtime = GraderRuntime(judge=judge, sandbox=sandbox_limits(settings))
    # Grading blocks (a sandboxed process, text metrics): off the event loop; judges hop back onto it.
    result = await to_thread.run_sync(grade, body.grader, body.model_sample, body.item or {}, runtime)
    return GraderRunResponse(
        reward=result.reward,
        sub_rewards=result.sub_rewards,
        metadata=GraderRunMetadata(
            name=result.name,
            type=result.type,
            errors=dict.fromkeys(ERROR_DETAILS) | result.errors | ({"details": result.error} if result.error else {}),
            execution_time=result.execution_time,
            scores=result.sub_rewards or {result.name: result.reward},
        ),
    )

from __future__ import annotations

import re
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.app.core.errors import InvalidRequest
from tuneforge.app.core.schemas import ListResponse, error_responses
from tuneforge.app.core.storage import get_store
from tuneforge.app.db.models import Job
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.jobs import artifacts, exports, gguf, merged, service
from tuneforge.app.jobs.request import JobCreate
from tuneforge.app.jobs.schemas import (
    CheckpointObject,
    FineTuningJob,
    JobEventObject,
    MetricPoint,
    MetricsSeries,
    SampleObject,
)
from tuneforge.app.jobs.stream import StreamSlot, job_stream
from tuneforge.contract.status import JobStatus

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], responses=error_responses(404))

_METADATA_PARAM = re.compile(r"^metadata\[(.*)\]$")
# Keys become JSON paths in SQL; a conservative charset keeps every backend's path syntax valid.
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_INT = 2**31 - 1
# A job holds at most 16 metadata keys (request.Metadata), so more filters can match nothing; each
# one is a condition in SQL, and a thousand of them exceed SQLite's expression depth (a 503).
MAX_METADATA_FILTERS = 16
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("", response_model=FineTuningJob, responses=error_responses(409, 429))
def create_job(
    body: JobCreate,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> FineTuningJob:
    """Create a job. It is committed before its message is published (docs/reliability.md)."""
    job, created = service.create(session, settings, principal, body, idempotency_key)
    session.commit()
    if created:
        service.enqueue(session, job.id)
        session.commit()
    return FineTuningJob.of(job)


@router.get("", response_model=ListResponse[FineTuningJob], responses=error_responses(403))
def list_jobs(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: Limit = 20,
    status: JobStatus | None = None,
    model: str | None = None,
    all_organizations: Annotated[
        bool, Query(description="Admin keys only: list every organization's jobs (an ops view).")
    ] = False,
) -> ListResponse[FineTuningJob]:
    """Newest first. Filter with `status`, `model` and `metadata[key]=value`."""
    metadata = {m.group(1): v for k, v in request.query_params.items() if (m := _METADATA_PARAM.match(k)) is not None}
    if len(metadata) > MAX_METADATA_FILTERS:
        raise InvalidRequest(
            f"{len(metadata)} metadata filters; a job holds at most {MAX_METADATA_FILTERS} metadata keys, "
            f"so give at most {MAX_METADATA_FILTERS} `metadata[key]=value` filters.",
            param="metadata",
            code="too_many_filters",
        )
    for key in metadata:
        if not _METADATA_KEY.match(key):
            raise InvalidRequest(
                "metadata filter keys are 1-64 characters of letters, digits, '_', '.', ':' or '-'.",
                param=f"metadata[{key[:64]}]",
            )
    rows = service.list_jobs(
        session,
        principal,
        after=after,
        limit=limit,
        status=status,
        model=model,
        metadata=metadata,
        all_organizations=all_organizations,
    )
    return ListResponse[FineTuningJob].page([FineTuningJob.of(j) for j in rows], limit)


@router.get("/{job_id}", response_model=FineTuningJob)
def retrieve_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    """The route dashboards poll: serialized once by pydantic's core, to bytes (the response model
    still documents it), instead of validated again and walked by FastAPI's encoder. One SELECT in
    autocommit: no BEGIN before it and no ROLLBACK after, two of the four round trips a read made."""
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    job = service.get(session, principal, job_id)
    session.close()  # the connection goes back to the pool before the response is built
    return Response(FineTuningJob.of(job).model_dump_json(), media_type="application/json")


@router.post("/{job_id}/cancel", response_model=FineTuningJob, responses=error_responses(409))
def cancel_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> FineTuningJob:
    job = service.cancel(session, principal, job_id)
    session.commit()
    return FineTuningJob.of(job)


@router.post("/{job_id}/pause", response_model=FineTuningJob, responses=error_responses(409))
def pause_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> FineTuningJob:
    """A queued job is held; a running one checkpoints and frees its worker (`pause_requested`,
    then `paused`)."""
    job = service.pause(session, principal, job_id)
    session.commit()
    return FineTuningJob.of(job)


@router.post("/{job_id}/resume", response_model=FineTuningJob, responses=error_responses(409, 429))
def resume_job(job_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> FineTuningJob:
    """Queue a paused job again; it continues from its last checkpoint. Committed before it is published."""
    job, queued = service.resume(session, settings, principal, job_id)
    session.commit()
    if queued:
        service.enqueue(session, job.id)
        session.commit()
        session.refresh(job)
    return FineTuningJob.of(job)


@router.get("/{job_id}/events", response_model=ListResponse[JobEventObject])
def list_events(
    job_id: str, session: SessionDep, principal: PrincipalDep, after: str | None = None, limit: Limit = 20
) -> ListResponse[JobEventObject]:
    rows = service.list_events(session, principal, job_id, after=after, limit=limit)
    return ListResponse[JobEventObject].page([JobEventObject.of(e) for e in rows], limit)


@router.get("/{job_id}/checkpoints", response_model=ListResponse[CheckpointObject])
def list_checkpoints(
    job_id: str, session: SessionDep, principal: PrincipalDep, after: str | None = None, limit: Limit = 10
) -> ListResponse[CheckpointObject]:
    job, rows = service.list_checkpoints(session, principal, job_id, after=after, limit=limit)
    return ListResponse[CheckpointObject].page([CheckpointObject.of(c, job) for c in rows], limit)


@router.get("/{job_id}/samples", response_model=ListResponse[SampleObject])
def list_samples(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    since_step: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
) -> ListResponse[SampleObject]:
    """Sample generations by step, then prompt: step 0 is the base model, later steps the adapter at
    each evaluation and at the end. Only those with step > since_step."""
    _, rows = service.list_samples(session, principal, job_id, since_step=since_step)
    return ListResponse[SampleObject](data=[SampleObject.of(s) for s in rows], has_more=False)


@router.get("/{job_id}/metrics", response_model=MetricsSeries)
def job_metrics(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    since_step: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    max_points: Annotated[int, Query(ge=2, le=100_000)] = 1000,
) -> MetricsSeries:
    """The step series: loss, eval_loss, learning rate, grad norm, tokens/s. Points with
    step > since_step, downsampled to at most max_points (the last point is always kept)."""
    job, total, rows = service.metric_series(session, principal, job_id, since_step=since_step, max_points=max_points)
    return MetricsSeries(job_id=job.id, total_points=total, data=[MetricPoint.of(m) for m in rows])


@router.get(
    "/{job_id}/adapter",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/gzip": {}},
            "description": "A .tar.gz holding a PEFT adapter folder; with format=merged a full model folder; with "
            "format=gguf or gguf-lora one GGUF file and an Ollama Modelfile.",
        },
        **error_responses(409, 429, 503),
    },
)
async def download_adapter(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    checkpoint: Annotated[
        int | None, Query(ge=0, le=MAX_INT, description="Step of an intermediate checkpoint.")
    ] = None,
    format: Annotated[
        Literal["peft", "merged", "gguf", "gguf-lora"],
        Query(
            description="peft: the adapter folder; merged: the base with the LoRA merged in (causal_lm); gguf: "
            "the merged model as one GGUF file (llama.cpp, Ollama); gguf-lora: the adapter alone as a LoRA GGUF."
        ),
    ] = "peft",
    quant: Annotated[
        gguf.GgufQuant | None,
        Query(description="With format=gguf: f16 (the default), q8_0, or q4_k_m where llama-quantize is built."),
    ] = None,
) -> StreamingResponse:
    """Async: a merged or GGUF export that is not built yet is awaited on the event loop while it
    builds on the exports' own threads (jobs/exports.py), never on a thread of the API's pool."""
    fmt = gguf.GgufFormat(format) if format in ("gguf", "gguf-lora") else None
    if quant is not None and fmt is None:
        raise InvalidRequest("quant is for format=gguf only.", param="quant", code="invalid_quant")

    def locate() -> tuple[Job, str, dict[str, str], str]:
        job = service.get(session, principal, job_id)
        if format == "merged":
            merged.check_mergeable(job)
        if fmt is not None:
            gguf.check_exportable(job, fmt, quant)
            gguf.check_available(settings, quant)
        found = (job, *artifacts.adapter_source(session, job, checkpoint))
        # Its connection goes back to the pool now: an export may take minutes to build, and fifty
        # requests waiting for one would otherwise hold fifty connections (the pool has 30).
        session.close()
        return found

    job, source, manifest, name = await run_in_threadpool(locate)
    store = get_store(settings)
    org = principal.organization_id
    if format == "merged":
        store, source, manifest, name = await exports.prepared(
            settings,
            org,
            (job.id, format, checkpoint),
            ready=merged.is_built(settings, job, checkpoint),
            build=partial(merged.export_from_store, settings, store, job, source, manifest, checkpoint, name),
        )
    elif fmt is not None:
        built = gguf.export_dir(settings, job, checkpoint, fmt, quant or gguf.GgufQuant.F16) / "Modelfile"
        store, source, manifest, name = await exports.prepared(
            settings,
            org,
            (job.id, format, quant, checkpoint),
            ready=built.is_file(),
            build=partial(gguf.export_from_store, settings, store, job, source, manifest, checkpoint, name, fmt, quant),
        )
    archive = await run_in_threadpool(artifacts.plan_archive, store, source, manifest, name)
    return StreamingResponse(
        artifacts.stream_archive(store, archive),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar.gz"'},
    )


@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "status, event, metrics, done"},
        **error_responses(429),
    },
)
def stream_job(
    job_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    _slot: StreamSlot,
    since_step: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    after: str | None = None,
) -> StreamingResponse:
    """Live progress as Server-Sent Events: `status` (on change), `event` (each new job event),
    `metrics` (new step points), then `done` when the job is finished. `since_step` sends only
    points after that step, `after` (an event id) only the events after that one."""
    job, after_seq = service.stream_start(session, principal, job_id, after=after)
    session.close()  # the stream opens its own short sessions
    return StreamingResponse(
        job_stream(request, job.id, since_step=-1 if since_step is None else since_step, after_seq=after_seq),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

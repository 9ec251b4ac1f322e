from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from app.core.errors import InvalidRequest
from app.core.schemas import ListResponse, error_responses
from app.deps import PrincipalDep, SessionDep, SettingsDep
from app.jobs import artifacts, merged, service
from app.jobs.request import JobCreate
from app.jobs.schemas import CheckpointObject, FineTuningJob, JobEventObject, MetricPoint, MetricsSeries
from app.jobs.stream import job_stream
from contract.status import JobStatus

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], responses=error_responses(404))

_METADATA_PARAM = re.compile(r"^metadata\[(.*)\]$")
# Keys become JSON paths in SQL; a conservative charset keeps every backend's path syntax valid.
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_INT = 2**31 - 1
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
def retrieve_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> FineTuningJob:
    return FineTuningJob.of(service.get(session, principal, job_id))


@router.post("/{job_id}/cancel", response_model=FineTuningJob, responses=error_responses(409))
def cancel_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> FineTuningJob:
    job = service.cancel(session, principal, job_id)
    session.commit()
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
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/gzip": {}},
            "description": "A .tar.gz holding a PEFT adapter folder, or with format=merged a full model folder.",
        },
        **error_responses(409),
    },
)
def download_adapter(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    checkpoint: Annotated[
        int | None, Query(ge=0, le=MAX_INT, description="Step of an intermediate checkpoint.")
    ] = None,
    format: Annotated[
        Literal["peft", "merged"],
        Query(description="peft: the adapter folder; merged: the base with the LoRA merged in (causal_lm)."),
    ] = "peft",
) -> FileResponse:
    job = service.get(session, principal, job_id)
    if format == "merged":
        merged.check_mergeable(job)
    source, manifest, name = artifacts.adapter_source(session, job, checkpoint)
    if format == "merged":
        source, manifest, name = merged.export(settings, job, source, checkpoint, name)
    archive = artifacts.build_archive(source, manifest, name)
    background.add_task(archive.unlink, missing_ok=True)
    return FileResponse(archive, media_type="application/gzip", filename=f"{name}.tar.gz")


@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "status, event, metrics, done"}},
)
def stream_job(job_id: str, request: Request, session: SessionDep, principal: PrincipalDep) -> StreamingResponse:
    """Live progress as Server-Sent Events: `status` (on change), `event` (each new job event),
    `metrics` (new step points), then `done` when the job is finished."""
    job = service.get(session, principal, job_id)
    session.close()  # the stream opens its own short sessions
    return StreamingResponse(
        job_stream(request, job.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

"""Job use cases. Services flush; the route (request scope) or task commits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.orm import Session

from tuneforge.app.auth import repository as auth_repo
from tuneforge.app.auth.service import Principal
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, describe_validation
from tuneforge.app.core.ids import new_id
from tuneforge.app.db.models import Checkpoint, File, Job, JobEvent, JobMetric, JobSample
from tuneforge.app.files import repository as files_repo
from tuneforge.app.fleet import routing
from tuneforge.app.jobs import continuation, dispatch, lifecycle, repository
from tuneforge.app.jobs.admission import (
    check_caps,
    check_data_against_spec,
    check_gpu_memory,
    check_judges,
    check_queue_room,
)
from tuneforge.app.jobs.integrations import resolve_integrations
from tuneforge.app.jobs.model_path import model_config, resolve_model
from tuneforge.app.jobs.pausing import pause_job, resume_job
from tuneforge.app.jobs.request import JobCreate
from tuneforge.contract.spec import SpecError
from tuneforge.contract.status import TERMINAL, JobStatus


def get(session: Session, principal: Principal, job_id: str, *, write: bool = False) -> Job:
    """Another organization's job is a 404 exactly like a job that does not exist."""
    job = repository.get(session, principal.scope(write=write), job_id)
    if job is None:
        raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="job_not_found")
    return job


def _file(session: Session, principal: Principal, file_id: str, param: str) -> File:
    f = files_repo.get(session, principal.organization_id, file_id)
    if f is None:
        raise InvalidRequest(f"File {file_id} does not exist.", param=param, code="file_not_found")
    if f.purpose != "fine-tune":
        raise InvalidRequest(f"File {file_id} has purpose {f.purpose!r}, not 'fine-tune'.", param=param)
    return f


def _fingerprint(body: JobCreate) -> str:
    return hashlib.sha256(body.model_dump_json(exclude_unset=True).encode()).hexdigest()


def _replay(session: Session, principal: Principal, body: JobCreate, idempotency_key: str | None) -> Job | None:
    """The job an earlier request with this Idempotency-Key made, if the body is the same; a 409 if not."""
    if not idempotency_key:
        return None
    existing = repository.get_by_idempotency_key(session, principal.organization_id, idempotency_key)
    if existing is not None and existing.idempotency_hash != _fingerprint(body):
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    return existing


def create(
    session: Session, settings: Settings, principal: Principal, body: JobCreate, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Validate and store a job in `queued`. Returns (job, created); created is False for a replay.

    The replay is checked twice: at once (a cheap answer before validating), and again under the
    organization's lock just before the row is added, so that concurrent requests with one
    Idempotency-Key make one job (not a 500 from the unique index). The queue cap is checked only
    under that lock, after validation: concurrent creates cannot pass it together, and a request that
    is wrong gets its 400 naming the field rather than a 429 telling it to retry the same mistake.
    The lock is held until the route commits."""
    replay = _replay(session, principal, body, idempotency_key)
    if replay is not None:
        return replay, False
    try:
        spec = body.resolve()
        model_dir = resolve_model(settings, body.model)
    except SpecError as exc:
        raise InvalidRequest(exc.message, param=exc.param, code="invalid_spec") from exc
    except ValidationError as exc:  # a rule checked while the blocks are combined
        message, param = describe_validation(list(exc.errors()))
        raise InvalidRequest(message, param=param, code="invalid_spec") from exc
    check_caps(spec, settings)
    check_judges(session, principal.organization_id, spec)
    spec = resolve_integrations(spec, settings)
    if body.from_checkpoint is not None:
        source = continuation.find(session, principal.organization_id, body.from_checkpoint)
        continuation.check_compatible(source, body.model, spec, body.from_checkpoint)
    config = model_config(model_dir) if model_dir is not None else None
    if config is not None:
        check_gpu_memory(spec, config, settings)
    gpu_class = routing.pick_gpu_class(spec, config, settings)
    training = _file(session, principal, body.training_file, "training_file")
    check_data_against_spec(spec, training, "training_file")
    validation = None
    if body.validation_file:
        validation = _file(session, principal, body.validation_file, "validation_file")
        check_data_against_spec(spec, validation, "validation_file")

    auth_repo.lock_org(session, principal.organization_id)
    replay = _replay(session, principal, body, idempotency_key)
    if replay is not None:
        return replay, False
    check_queue_room(session, settings, principal.organization_id)
    job = Job(
        id=new_id("ftjob"),
        organization_id=principal.organization_id,
        model=body.model,
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        training_file=training.id,
        validation_file=validation.id if validation else None,
        suffix=body.suffix,
        seed=spec.seed,
        job_metadata=body.metadata,
        result_files=[],
        attempt=1,
        gpu_class=gpu_class,
        idempotency_key=idempotency_key,
        idempotency_hash=_fingerprint(body) if idempotency_key else None,
    )
    session.add(job)
    session.flush()
    repository.add_event(session, job.id, f"Validating training file: {training.id}")
    if validation:
        repository.add_event(session, job.id, f"Validating validation file: {validation.id}")
    repository.add_event(
        session,
        job.id,
        f"Files validated ({training.n_rows} training rows), job queued",
        data={"task": spec.task, "gpu_class": gpu_class} if gpu_class else {"task": spec.task},
    )
    routing.note_unserved(session, settings, [(job.id, gpu_class)])
    return job, True


def enqueue(session: Session, job_id: str) -> None:
    """Publish after the job row is committed. If the broker is down the job stays `queued` and the
    reconciler re-sends it, so nothing is lost either way."""
    dispatch.publish_and_mark(session, job_id)


def cancel(session: Session, principal: Principal, job_id: str) -> Job:
    job = get(session, principal, job_id, write=True)
    if job.status in TERMINAL:
        raise Conflict(f"Job {job_id} is already {job.status}; it cannot be cancelled.", code="job_finished")
    # At most one applies: a job no worker holds is cancelled now; a training one is asked to stop.
    if not lifecycle.cancel(session, job_id):
        lifecycle.request_cancel(session, job_id)
    session.refresh(job)
    return job


def pause(session: Session, principal: Principal, job_id: str) -> Job:
    job = get(session, principal, job_id, write=True)
    pause_job(session, job)
    return job


def resume(session: Session, settings: Settings, principal: Principal, job_id: str) -> tuple[Job, bool]:
    """Queue a paused job again, within the organization's queue room. Returns (job, queued): the
    route commits, then publishes a queued job with `enqueue`."""
    job = get(session, principal, job_id, write=True)
    if job.status == JobStatus.PAUSED:
        check_queue_room(session, settings, principal.organization_id)
    return job, resume_job(session, job)


# ----------------------------------------------------------------------------- reads


def list_jobs(
    session: Session,
    principal: Principal,
    *,
    after: str | None,
    limit: int,
    status: JobStatus | None,
    model: str | None,
    metadata: dict[str, str],
    all_organizations: bool,
) -> list[Job]:
    """Newest first, limit+1 rows. Only an admin key may list every organization's jobs."""
    if all_organizations and not principal.is_admin:
        raise PermissionDenied(
            "all_organizations=true needs an admin key (tuneforge keys create --admin).",
            param="all_organizations",
            code="admin_required",
        )
    org = None if all_organizations else principal.organization_id
    return repository.list_page(session, org, after=after, limit=limit, status=status, model=model, metadata=metadata)


def list_events(
    session: Session, principal: Principal, job_id: str, *, after: str | None, limit: int
) -> list[JobEvent]:
    job = get(session, principal, job_id)
    return repository.events_page(session, job.id, after=after, limit=limit)


def stream_start(session: Session, principal: Principal, job_id: str, *, after: str | None) -> tuple[Job, int]:
    """The job to stream, and the position of the event `after` (0: from the first event)."""
    job = get(session, principal, job_id)
    return job, repository.event_seq(session, job.id, after) if after else 0


def list_checkpoints(
    session: Session, principal: Principal, job_id: str, *, after: str | None, limit: int
) -> tuple[Job, list[Checkpoint]]:
    job = get(session, principal, job_id)
    return job, repository.checkpoints_page(session, job.id, after=after, limit=limit)


def list_samples(
    session: Session, principal: Principal, job_id: str, *, since_step: int | None
) -> tuple[Job, Sequence[JobSample]]:
    """The job's sample generations, by step then prompt."""
    job = get(session, principal, job_id)
    return job, repository.samples(session, job.id, since_step=since_step)


def metric_series(
    session: Session, principal: Principal, job_id: str, *, since_step: int | None, max_points: int
) -> tuple[Job, int, Sequence[JobMetric]]:
    """(job, points stored in the range, the downsampled points)."""
    job = get(session, principal, job_id)
    total, rows = repository.metrics_sampled(session, job.id, since_step=since_step, max_points=max_points)
    return job, total, rows

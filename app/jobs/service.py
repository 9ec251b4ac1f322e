"""Job use cases. Services flush; the route (request scope) or task commits."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.core.config import Settings
from app.core.errors import Conflict, InvalidRequest, NotFound, TooManyRequests, describe_validation
from app.core.ids import new_id
from app.db.models import Checkpoint, File, Job
from app.files import repository as files_repo
from app.jobs import repository
from app.jobs.memory_estimate import GB, RUNTIME_ALLOWANCE_GB, estimate
from app.jobs.model_path import model_config, resolve_model
from app.jobs.spec import JobCreate, JobSpec, SpecError

log = logging.getLogger("tuneforge.jobs")

# How long a client over the queued-jobs limit is told to wait; jobs take minutes, not seconds.
RETRY_AFTER_SECONDS = 30


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


def check_data_against_spec(spec: JobSpec, f: File, param: str) -> None:
    """What can be known from the recorded columns is checked at submission, naming the field."""
    cols = f.columns or {}
    d = spec.data
    listed = ", ".join(sorted(cols)) or "none"
    if spec.task == "causal_lm":
        if d.messages_field in cols or d.text_field in cols:
            return
        if d.prompt_field in cols and d.completion_field in cols:
            return
        raise InvalidRequest(
            f"File {f.id} has columns [{listed}]; causal_lm needs '{d.text_field}', "
            f"'{d.prompt_field}' + '{d.completion_field}', or '{d.messages_field}' "
            "(rename them with data.text_field, data.prompt_field, ...).",
            param=param,
            code="invalid_file",
        )
    if d.text_field not in cols:
        raise InvalidRequest(
            f"File {f.id} has no '{d.text_field}' column (columns: {listed}); set data.text_field.",
            param=param,
            code="invalid_file",
        )
    if d.label_field not in cols:
        raise InvalidRequest(
            f"File {f.id} has no '{d.label_field}' column (columns: {listed}); set data.label_field.",
            param=param,
            code="invalid_file",
        )
    label = cols[d.label_field]
    if spec.task == "regression" and not label.get("numeric"):
        raise InvalidRequest(
            f"regression needs a numeric '{d.label_field}' column, but file {f.id} has non-numeric values.",
            param=param,
            code="invalid_file",
        )
    if spec.task == "sequence_classification" and label.get("distinct") is not None and label["distinct"] < 2:
        raise InvalidRequest(
            f"sequence_classification needs at least 2 classes in '{d.label_field}'; file {f.id} has one.",
            param=param,
            code="invalid_file",
        )


def check_caps(spec: JobSpec, settings: Settings) -> None:
    """The operator's caps (TUNEFORGE_MAX_*): what one job may ask of a GPU."""
    t = spec.training
    caps = (
        ("training.max_steps", t.max_steps, settings.max_steps, "TUNEFORGE_MAX_STEPS"),
        ("training.epochs", t.epochs, settings.max_epochs, "TUNEFORGE_MAX_EPOCHS"),
        ("training.max_seq_length", t.max_seq_length, settings.max_seq_length, "TUNEFORGE_MAX_SEQ_LENGTH"),
        ("training.batch_size", t.batch_size, settings.max_batch_size, "TUNEFORGE_MAX_BATCH_SIZE"),
        ("lora.r", spec.lora.r, settings.max_lora_r, "TUNEFORGE_MAX_LORA_R"),
    )
    for param, value, cap, env in caps:
        if value is not None and value > cap:
            raise InvalidRequest(
                f"{param}={value} is over this server's limit of {cap} (set by the operator with {env}).",
                param=param,
                code="over_limit",
            )


def check_gpu_memory(spec: JobSpec, config: dict[str, Any], settings: Settings) -> None:
    """Refuse at submission a job that cannot fit the largest worker GPU, rather than let it OOM
    after waiting in the queue."""
    if settings.worker_gpu_memory_gb is None:
        return
    est = estimate(config, spec)
    if est is None:
        return  # a config the estimator cannot read is let through; the worker reports an OOM clearly
    needed = est.total / GB + RUNTIME_ALLOWANCE_GB
    if needed > settings.worker_gpu_memory_gb:
        raise InvalidRequest(
            f"This job needs an estimated {est.describe()} plus {RUNTIME_ALLOWANCE_GB:.0f} GB of CUDA runtime, "
            f"more than the largest worker GPU ({settings.worker_gpu_memory_gb:g} GB). Lower training.batch_size "
            "or training.max_seq_length, set training.gradient_checkpointing=true, or use 4-bit quantization.",
            param="training.batch_size",
            code="insufficient_gpu_memory",
        )


def check_queue_room(session: Session, settings: Settings, org_id: str) -> None:
    """Per-organization fairness. Running jobs are capped where workers claim them (a job over the
    running cap waits in `queued`); the queue itself is capped here."""
    queued = repository.count_by_status(session, org_id, ("validating_files", "queued"))
    if queued >= settings.max_queued_jobs_per_org:
        raise TooManyRequests(
            f"Your organization already has {queued} queued jobs, the limit "
            f"(TUNEFORGE_MAX_QUEUED_JOBS_PER_ORG={settings.max_queued_jobs_per_org}). "
            "Retry when some have started, or cancel some.",
            retry_after=RETRY_AFTER_SECONDS,
            code="queued_jobs_limit",
        )


def _fingerprint(body: JobCreate) -> str:
    return hashlib.sha256(body.model_dump_json(exclude_unset=True).encode()).hexdigest()


def create(
    session: Session, settings: Settings, principal: Principal, body: JobCreate, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Validate and store a job in `queued`. Returns (job, created); created is False for a replay."""
    if idempotency_key:
        existing = repository.get_by_idempotency_key(session, principal.organization_id, idempotency_key)
        if existing is not None:
            if existing.idempotency_hash != _fingerprint(body):
                raise Conflict(
                    "This Idempotency-Key was already used with a different request body.",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            return existing, False
    check_queue_room(session, settings, principal.organization_id)
    try:
        spec = body.resolve()
        model_dir = resolve_model(settings, body.model)
    except SpecError as exc:
        raise InvalidRequest(exc.message, param=exc.param, code="invalid_spec") from exc
    except ValidationError as exc:  # a rule checked while the blocks are combined
        message, param = describe_validation(list(exc.errors()))
        raise InvalidRequest(message, param=param, code="invalid_spec") from exc
    check_caps(spec, settings)
    if model_dir is not None:
        check_gpu_memory(spec, model_config(model_dir), settings)
    training = _file(session, principal, body.training_file, "training_file")
    check_data_against_spec(spec, training, "training_file")
    validation = None
    if body.validation_file:
        validation = _file(session, principal, body.validation_file, "validation_file")
        check_data_against_spec(spec, validation, "validation_file")

    job = Job(
        id=new_id("ftjob"),
        organization_id=principal.organization_id,
        model=body.model,
        status="queued",
        spec=spec.model_dump(mode="json"),
        training_file=training.id,
        validation_file=validation.id if validation else None,
        suffix=body.suffix,
        seed=spec.seed,
        job_metadata=body.metadata,
        result_files=[],
        attempt=1,
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
        data={"task": spec.task},
    )
    return job, True


def enqueue(session: Session, job_id: str) -> None:
    """Publish after the job row is committed. If the broker is down the job stays `queued` and the
    reconciler re-sends it, so nothing is lost either way."""
    from worker.celery_app import publish_train

    try:
        publish_train(job_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the job to the reconciler
        log.warning("could not publish %s (%s); the reconciler will re-send it", job_id, type(exc).__name__)
        return
    repository.mark_enqueued(session, job_id)


def cancel(session: Session, principal: Principal, job_id: str) -> Job:
    job = get(session, principal, job_id, write=True)
    if job.status in repository.TERMINAL:
        raise Conflict(f"Job {job_id} is already {job.status}; it cannot be cancelled.", code="job_finished")
    if repository.cancel_queued(session, job_id):
        repository.add_event(session, job_id, "Job cancelled before it started")
    elif repository.request_cancel(session, job_id):
        repository.add_event(session, job_id, "Cancellation requested; the worker stops within seconds")
    session.refresh(job)
    return job


def adapter_source(session: Session, job: Job, checkpoint: int | None) -> tuple[Path, dict[str, str], str]:
    """The recorded artifact directory and its manifest. Never a path a user supplied."""
    if checkpoint is not None:
        ckpt: Checkpoint | None = repository.checkpoint_at(session, job.id, checkpoint)
        if ckpt is None:
            raise NotFound(f"Job {job.id} has no checkpoint at step {checkpoint}.", param="checkpoint")
        return Path(ckpt.path) / "adapter", ckpt.manifest, f"{job.id}-step-{checkpoint}"
    if job.adapter_path is None or job.adapter_manifest is None:
        raise Conflict(
            f"Job {job.id} is {job.status} and has no final adapter"
            + ("; list its checkpoints to download one." if job.status != "succeeded" else "."),
            code="adapter_not_available",
        )
    return Path(job.adapter_path), job.adapter_manifest, f"{job.id}-adapter"


def build_archive(source: Path, manifest: dict[str, str], name: str) -> Path:
    """A .tar.gz of the adapter's own files under `<name>/`, listed from the recorded manifest."""
    fd, tmp = tempfile.mkstemp(prefix="tuneforge-adapter-", suffix=".tar.gz")
    with open(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for rel in sorted(manifest):
            path = (source / rel).resolve()
            if source.resolve() not in path.parents:
                continue  # a manifest is written by the worker; this guards it anyway
            tar.add(path, arcname=f"{name}/{rel}", recursive=False)
        info = json.dumps({"files": manifest}, indent=2, sort_keys=True).encode()
        member = tarfile.TarInfo(f"{name}/SHA256SUMS.json")
        member.size = len(info)
        tar.addfile(member, io.BytesIO(info))
    return Path(tmp)

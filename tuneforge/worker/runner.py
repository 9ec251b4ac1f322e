"""Claim a job, train it, record the outcome. The glue between the database and `run()`."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings, get_settings
from tuneforge.app.core.errors import APIError
from tuneforge.app.core.logging import request_id_var
from tuneforge.app.db.engine import session_scope
from tuneforge.app.files import repository as files_repo
from tuneforge.app.jobs import continuation, dispatch, lifecycle, repository
from tuneforge.app.jobs.model_path import resolve_model
from tuneforge.contract.graders.shapes import judge_models
from tuneforge.contract.spec import JobSpec, SpecError
from tuneforge.contract.status import ErrorCode, JobStatus, RunOutcome, StopReason
from tuneforge.storage import StoreMissing
from tuneforge.worker import tracking
from tuneforge.worker.artifact_sync import ArtifactSync, PreparedStores
from tuneforge.worker.db_reporter import DBReporter, retry
from tuneforge.worker.ddp import RankLost, run_distributed
from tuneforge.worker.file_rows import FileRows
from tuneforge.worker.training.errors import StopTraining, TrainingError
from tuneforge.worker.training.host_memory import HostMemoryPolicy
from tuneforge.worker.training.judge import JUDGE_ADAPTERS_ENV
from tuneforge.worker.training.prepare import all_rows
from tuneforge.worker.training.reporter import Reporter
from tuneforge.worker.training.run import run

log = logging.getLogger("tuneforge.worker")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

OOM_HINT = (
    "Out of memory while training. Lower training.batch_size or training.max_seq_length, "
    "or set training.gradient_checkpointing=true."
)


@dataclass(frozen=True)
class Claimed:
    """What the runner reads of a job once it holds the lease."""

    spec: dict[str, Any]
    model: str
    training_file: str
    validation_file: str | None
    organization_id: str
    suffix: str | None
    attempt: int


@dataclass
class Outcome:
    """How a run ended, and the job columns to record with it."""

    status: JobStatus | StopReason
    values: dict[str, Any] = field(default_factory=dict)


def execute(job_id: str, worker_id: str = WORKER_ID) -> RunOutcome:
    """Run one job to a terminal state. Returns what happened, for logs and tests."""
    token = request_id_var.set(job_id)  # every log line of this job names it
    try:
        return _execute(job_id, worker_id)
    finally:
        # The job's trackers send what they hold after its outcome is recorded, within a bound.
        tracking.drain(get_settings().tracker_close_seconds)
        request_id_var.reset(token)


def _execute(job_id: str, worker_id: str) -> RunOutcome:
    settings = get_settings()
    with session_scope() as s:
        claimed = _claim(s, job_id, worker_id, settings)
        if isinstance(claimed, RunOutcome):
            return claimed
    sync = ArtifactSync(settings)
    reporter = DBReporter(job_id, worker_id, settings, store=lambda path: sync.upload_checkpoint(job_id, path))
    reporter.start()
    trackers = _trackers(job_id, claimed, settings, reporter)
    try:
        outcome = _train(job_id, claimed, settings, trackers.reporter, sync)
    finally:
        reporter.stop()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    outcome.values = reporter.last_progress | outcome.values
    trackers.finish(str(outcome.status), outcome.values.get("final_metrics"))
    if outcome.status == StopReason.LEASE_LOST:
        log.warning("job %s: lease lost; another attempt owns it now", job_id)
        return RunOutcome.LEASE_LOST
    if outcome.status == StopReason.SHUTDOWN or outcome.status == StopReason.RANK_LOST:
        assert isinstance(outcome.status, StopReason)
        return _hand_back(job_id, worker_id, outcome.status)
    if outcome.status == StopReason.PAUSED:
        return retry("recording the pause", lambda: _record_pause(job_id, worker_id, outcome.values), attempts=10)
    if outcome.status == StopReason.PRUNED:  # a sweep's pruner: cancelled, with the reason kept
        outcome = Outcome(JobStatus.CANCELLED, outcome.values | {"stop_reason": StopReason.PRUNED.value})
    status = JobStatus(outcome.status)
    if not retry("recording the outcome", lambda: _record(job_id, worker_id, status, outcome.values), attempts=10):
        log.warning("job %s: could not record %s; it was no longer ours", job_id, status)
    log.info("job %s attempt %s: %s", job_id, claimed.attempt, status)
    return RunOutcome(status)


def _claim(session: Session, job_id: str, worker_id: str, settings: Settings) -> Claimed | RunOutcome:
    cap = settings.max_running_jobs_per_org
    if not lifecycle.claim(session, job_id, worker_id, lease_seconds=settings.lease_seconds, max_running_per_org=cap):
        # Still queued: its organization is at the running cap (a finished or taken job is not).
        if lifecycle.defer(session, job_id, cap=cap):
            log.info("job %s deferred: its organization is at the running-jobs cap", job_id)
            return RunOutcome.DEFERRED
        job = repository.get(session, None, job_id)
        log.info("job %s not claimed (status %s): a duplicate delivery or a finished job", job_id, job and job.status)
        return RunOutcome.SKIPPED
    job = repository.get(session, None, job_id)
    assert job is not None, "a job this worker just claimed exists"
    return Claimed(
        job.spec, job.model, job.training_file, job.validation_file, job.organization_id, job.suffix, job.attempt
    )


def _trackers(job_id: str, job: Claimed, settings: Settings, reporter: DBReporter) -> tracking.Trackers:
    """The job's `integrations` (W&B, MLflow), fed from the engine's metric points in the background."""
    try:
        spec = JobSpec.model_validate(job.spec)
    except ValueError:  # _train fails the job with the reason
        return tracking.Trackers(reporter, [])
    try:
        return tracking.Trackers.attach(job_id, spec, job.model, settings, reporter)
    except Exception:  # a tracker must never cost the job: train without them
        log.exception("job %s: could not start its trackers", job_id)
        reporter.event("Could not start the job's integrations; training goes on without them", level="error")
        return tracking.Trackers(reporter, [])


def _train(job_id: str, job: Claimed, settings: Settings, reporter: Reporter, sync: ArtifactSync) -> Outcome:
    """Run the engine, and turn whatever it raised into an outcome with an `error.code`."""
    try:
        spec = JobSpec.model_validate(job.spec)
        try:
            model_dir = resolve_model(settings, job.model, fetch=True)
        except SpecError as exc:
            raise TrainingError(ErrorCode.INVALID_SPEC, exc.message, "model") from exc
        assert model_dir is not None, "resolve_model(fetch=True) returns a directory or raises"
        reporter.event("Validating the model and data against the spec")
        rows = _load_rows(sync, job.training_file, "training_file")
        validation = _load_rows(sync, job.validation_file, "validation_file") if job.validation_file else None
        out_dir = settings.artifacts_dir / job_id
        sync.restore_checkpoint(job_id, out_dir)
        init_adapter = _init_adapter(spec, job.organization_id)
        _expose_judges(spec, job.organization_id)
        if settings.devices_per_job > 1:
            result = run_distributed(
                settings.devices_per_job, job.spec, model_dir, all_rows(rows),
                all_rows(validation) if validation is not None else None, out_dir, reporter,
                attempt=job.attempt, timeout_seconds=settings.ddp_timeout_seconds, init_adapter=init_adapter,
            )  # fmt: skip
        else:
            result = run(
                spec, model_dir, rows, validation, out_dir, reporter, attempt=job.attempt, init_adapter=init_adapter,
                prepared=PreparedStores(sync), host_memory=HostMemoryPolicy(settings.host_memory),
            )  # fmt: skip
        adapter_location = sync.upload_adapter(job_id, result.adapter_dir)
    except StopTraining as stop:
        return Outcome(stop.reason)
    except RankLost:
        log.warning("job %s: a rank died; handing the job back to resume", job_id, exc_info=True)
        return Outcome(StopReason.RANK_LOST)
    except TrainingError as exc:
        return Outcome(JobStatus.FAILED, {"error": {"code": exc.code, "message": exc.message, "param": exc.param}})
    except Exception as exc:
        if _is_oom(exc):
            error = {"code": ErrorCode.OOM, "message": OOM_HINT, "param": "training.batch_size"}
            return Outcome(JobStatus.FAILED, {"error": error})
        log.exception("job %s failed", job_id)
        message = f"Training failed with an internal error ({type(exc).__name__}). The worker log has details."
        return Outcome(JobStatus.FAILED, {"error": {"code": ErrorCode.INTERNAL, "message": message, "param": None}})
    return Outcome(
        JobStatus.SUCCEEDED,
        {
            "fine_tuned_model": f"ft:{job.model}:{job.organization_id}:{job.suffix or ''}:{job_id}",
            "trained_tokens": result.trained_tokens,
            "adapter_path": adapter_location,
            "adapter_manifest": result.manifest,
            "final_metrics": result.final_metrics,
            "step": result.steps,
            "error": None,
        },
    )


def _record(job_id: str, worker_id: str, status: JobStatus, values: dict[str, Any]) -> bool:
    """The run's end, if the job is still this worker's."""
    with session_scope() as s:
        if status == JobStatus.SUCCEEDED:
            return lifecycle.succeed(s, job_id, worker_id, **values)
        if status == JobStatus.CANCELLED:
            return lifecycle.complete_cancel(s, job_id, worker_id, **values)
        return lifecycle.fail(s, job_id, worker_id, **values)


def _init_adapter(spec: JobSpec, org_id: str) -> Path | None:
    """The adapter a continued job starts from (`from_checkpoint`), checked again: it may have been
    deleted since the job was queued."""
    if spec.from_checkpoint is None:
        return None
    try:
        with session_scope() as s:
            source = continuation.find(s, org_id, spec.from_checkpoint)
    except APIError as exc:
        raise TrainingError(ErrorCode.INVALID_SPEC, exc.message, "from_checkpoint") from exc
    missing = TrainingError(
        ErrorCode.INVALID_SPEC, f"The adapter of {spec.from_checkpoint} is no longer stored.", "from_checkpoint"
    )
    try:
        # The recorded location is a store key (artifacts/<job>/...): local on the default store,
        # downloaded by its manifest from S3.
        adapter_dir = ArtifactSync(get_settings()).local_folder(source.adapter_dir.as_posix())
    except StoreMissing as exc:
        raise missing from exc
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise missing
    return adapter_dir


def _expose_judges(spec: JobSpec, org_id: str) -> None:
    """The `ft:` judges of the job's grader, resolved to their base model and a local copy of their
    adapter for the engine's in-process judge (training/judge.py), in the environment: set (or cleared)
    for every job, as a worker runs one at a time, and inherited by a multi-device run's processes.
    Checked again as at POST (admission.check_judges): the job's own organization's, still stored."""
    found: dict[str, dict[str, str]] = {}
    grader = spec.reinforcement.grader
    for path, model in judge_models(grader) if grader is not None else []:
        if not model.startswith("ft:") or model in found:
            continue
        param = f"method.reinforcement.{path}"
        try:
            with session_scope() as s:
                source = continuation.find(s, org_id, model)
        except APIError as exc:
            raise TrainingError(ErrorCode.INVALID_SPEC, f"Judge model {model}: {exc.message}", param) from exc
        if source.job.organization_id != org_id:
            raise TrainingError(ErrorCode.INVALID_SPEC, f"Judge model {model} belongs to another organization.", param)
        try:
            adapter_dir = ArtifactSync(get_settings()).local_folder(source.adapter_dir.as_posix())
        except StoreMissing as exc:
            raise TrainingError(
                ErrorCode.INVALID_SPEC, f"The adapter of judge {model} is no longer stored.", param
            ) from exc
        found[model] = {"model": source.job.model, "adapter": str(adapter_dir)}
    if found:
        os.environ[JUDGE_ADAPTERS_ENV] = json.dumps(found)
    else:
        os.environ.pop(JUDGE_ADAPTERS_ENV, None)


def _record_pause(job_id: str, worker_id: str, values: dict[str, Any]) -> RunOutcome:
    """The loop saved a checkpoint and stopped: the job is `paused` and this worker is free. If it
    was cancelled meanwhile it is cancelled; if the pause was withdrawn too late to keep training,
    it is queued again and continues from the checkpoint just saved."""
    with session_scope() as s:
        # At most one applies: each is conditional on the job's status and on this worker owning it.
        if lifecycle.complete_pause(s, job_id, worker_id, **values):
            log.info("job %s paused at step %s", job_id, values.get("step"))
            return RunOutcome.PAUSED
        if lifecycle.complete_cancel(s, job_id, worker_id, **values):
            return RunOutcome.CANCELLED
        if lifecycle.hand_back(s, job_id, worker_id, why=StopReason.PAUSED):
            s.commit()  # committed before it is published
            dispatch.publish_and_mark(s, job_id)
            return RunOutcome.REQUEUED
        return RunOutcome.LOST


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _load_rows(sync: ArtifactSync, file_id: str, param: str) -> FileRows:
    """The file's rows, read on demand: the engine prepares them in batches (or finds them prepared)
    and never holds them all."""
    with session_scope() as s:
        f = files_repo.get_internal(s, file_id)
        if f is None:
            raise TrainingError(ErrorCode.INVALID_FILE, f"File {file_id} was deleted.", param)
        key, sha256, fmt = f.storage_path, f.sha256, f.format
    path = sync.input_file(file_id, key, sha256)
    if not path.is_file():
        raise TrainingError(ErrorCode.INVALID_FILE, f"File {file_id} is missing from the artifact store.", param)
    return FileRows(path, fmt, sha256)


def _hand_back(job_id: str, worker_id: str, why: StopReason = StopReason.SHUTDOWN) -> RunOutcome:
    """Graceful shutdown: the job goes back to `queued` as a new attempt and is published again, so
    another worker resumes it from the checkpoint just saved. If it was being cancelled meanwhile,
    it is cancelled instead; if it was being paused, it is paused."""

    def release() -> RunOutcome:
        with session_scope() as s:
            # At most one applies: each is conditional on the job's status and on this worker owning it.
            if lifecycle.hand_back(s, job_id, worker_id, why=why):
                return RunOutcome.REQUEUED
            if lifecycle.complete_cancel(s, job_id, worker_id):
                return RunOutcome.CANCELLED
            if lifecycle.complete_pause(s, job_id, worker_id):
                return RunOutcome.PAUSED
            return RunOutcome.LOST

    outcome: RunOutcome = retry("handing the job back", release, attempts=10)
    if outcome == RunOutcome.REQUEUED:
        with session_scope() as s:
            dispatch.publish_and_mark(s, job_id)
    log.info("job %s: worker shutdown -> %s", job_id, outcome)
    return outcome

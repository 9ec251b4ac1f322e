"""Claim a job, train it, record the outcome. The glue between the database and `run()`."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.logging import request_id_var
from app.db.engine import session_scope
from app.files import repository as files_repo
from app.files.parsing import iter_rows
from app.jobs import repository
from app.jobs.model_path import resolve_model
from app.jobs.spec import JobSpec, SpecError
from worker.db_reporter import DBReporter, _retry
from worker.training.errors import StopTraining, TrainingError
from worker.training.run import run

log = logging.getLogger("tuneforge.worker")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

OOM_HINT = (
    "Out of memory while training. Lower training.batch_size or training.max_seq_length, "
    "or set training.gradient_checkpointing=true."
)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _load_rows(file_id: str | None) -> list[dict[str, Any]] | None:
    if file_id is None:
        return None
    with session_scope() as s:
        f = files_repo.get_internal(s, file_id)
        if f is None:
            raise TrainingError("invalid_file", f"File {file_id} was deleted.", "training_file")
        path, fmt = Path(f.storage_path), f.format
    return list(iter_rows(path, fmt))  # type: ignore[arg-type]


def execute(job_id: str, worker_id: str = WORKER_ID) -> str:
    """Run one job to a terminal state. Returns what happened, for logs and tests."""
    token = request_id_var.set(job_id)  # every log line of this job names it
    try:
        return _execute(job_id, worker_id)
    finally:
        request_id_var.reset(token)


def _execute(job_id: str, worker_id: str) -> str:
    settings = get_settings()
    with session_scope() as s:
        if not repository.claim(s, job_id, worker_id, settings.lease_seconds, settings.max_running_jobs_per_org):
            job = repository.get(s, None, job_id)
            if job is not None and job.status == "queued":
                return _defer(s, job_id, settings.max_running_jobs_per_org)
            log.info(
                "job %s not claimed (status %s): a duplicate delivery or a finished job",
                job_id,
                job and job.status,
            )
            return "skipped"
        job = repository.get(s, None, job_id)
        assert job is not None
        repository.add_event(
            s, job_id, f"Worker {worker_id} started attempt {job.attempt}", data={"attempt": job.attempt}
        )
        spec_raw, model_name, train_id, val_id = job.spec, job.model, job.training_file, job.validation_file
        org, suffix, attempt = job.organization_id, job.suffix, job.attempt

    reporter = DBReporter(job_id, worker_id, settings)
    reporter.start()
    outcome: tuple[str, dict[str, Any]]
    try:
        spec = JobSpec.model_validate(spec_raw)
        try:
            model_dir = resolve_model(settings, model_name, fetch=True)
            assert model_dir is not None
        except SpecError as exc:
            raise TrainingError("invalid_spec", exc.message, "model") from exc
        reporter.event("Validating the model and data against the spec")
        rows = _load_rows(train_id)
        assert rows is not None
        out_dir = settings.artifacts_dir / job_id
        result = run(spec, model_dir, rows, _load_rows(val_id), out_dir, reporter, attempt=attempt)
        fine_tuned = f"ft:{model_name}:{org}:{suffix or ''}:{job_id}"
        outcome = (
            "succeeded",
            {
                "fine_tuned_model": fine_tuned,
                "trained_tokens": result.trained_tokens,
                "adapter_path": str(result.adapter_dir),
                "adapter_manifest": result.manifest,
                "final_metrics": result.final_metrics,
                "step": result.steps,
                "error": None,
            },
        )
    except StopTraining as stop:
        outcome = (stop.reason, {})
    except TrainingError as exc:
        outcome = ("failed", {"error": {"code": exc.code, "message": exc.message, "param": exc.param}})
    except Exception as exc:
        if _is_oom(exc):
            outcome = (
                "failed",
                {"error": {"code": "oom", "message": OOM_HINT, "param": "training.batch_size"}},
            )
        else:
            log.exception("job %s failed", job_id)
            message = f"Training failed with an internal error ({type(exc).__name__}). The worker log has details."
            outcome = ("failed", {"error": {"code": "internal", "message": message, "param": None}})
    finally:
        reporter.stop()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    status, values = outcome
    values = reporter.last_progress | values
    if status == "lease_lost":
        log.warning("job %s: lease lost; another attempt owns it now", job_id)
        return status
    if status == "shutdown":
        return _hand_back(job_id, worker_id)

    def record() -> bool:
        with session_scope() as s:
            done = repository.finish(s, job_id, worker_id, status, **values)
            if done:
                if status == "succeeded":
                    repository.add_event(s, job_id, f"New fine-tuned model created: {values['fine_tuned_model']}")
                    repository.add_event(s, job_id, "The job has successfully completed")
                elif status == "cancelled":
                    repository.add_event(s, job_id, "Job cancelled; its checkpoints are kept")
                else:
                    repository.add_event(s, job_id, f"Job failed: {values['error']['message']}", level="error")
            return done

    if not _retry("recording the outcome", record, attempts=10):
        log.warning("job %s: could not record %s; it was no longer ours", job_id, status)
    log.info("job %s attempt %s: %s", job_id, attempt, status)
    return status


WAITING = "Waiting for a training slot"


def _defer(session: Session, job_id: str, cap: int) -> str:
    """The organization is at its running-jobs cap: leave the job queued for the reconciler to send
    again, and free this worker for another organization's job."""
    repository.mark_unsent(session, job_id)
    if not (repository.last_event_message(session, job_id) or "").startswith(WAITING):
        repository.add_event(
            session,
            job_id,
            f"{WAITING}: your organization has {cap} jobs running (TUNEFORGE_MAX_RUNNING_JOBS_PER_ORG)",
        )
    log.info("job %s deferred: its organization is at the running-jobs cap", job_id)
    return "deferred"


def _hand_back(job_id: str, worker_id: str) -> str:
    """Graceful shutdown: the job goes back to `queued` as a new attempt and is published again, so
    another worker resumes it from the checkpoint just saved. If it was being cancelled meanwhile,
    it is cancelled instead."""
    from worker.celery_app import publish_train

    def release() -> str:
        with session_scope() as s:
            if repository.release(s, job_id, worker_id):
                repository.add_event(
                    s, job_id, "Worker shutting down; checkpoint saved and job re-queued", level="warn"
                )
                return "requeued"
            if repository.finish(s, job_id, worker_id, "cancelled"):
                repository.add_event(s, job_id, "Job cancelled; its checkpoints are kept")
                return "cancelled"
            return "lost"

    outcome = _retry("handing the job back", release, attempts=10)
    if outcome == "requeued":
        try:
            publish_train(job_id)
            with session_scope() as s:
                repository.mark_enqueued(s, job_id)
        except Exception as exc:  # noqa: BLE001 - the reconciler re-sends queued jobs
            log.warning("job %s re-queued but not published (%s); the reconciler will", job_id, type(exc).__name__)
    log.info("job %s: worker shutdown -> %s", job_id, outcome)
    return "requeued" if outcome == "requeued" else outcome

"""Pause and resume (OpenAI's `POST /fine_tuning/jobs/{id}/pause` and `.../resume`).

- Pausing a `queued` job holds it: it becomes `paused` at once and no worker will start it.
- Pausing a `running` job asks its worker to stop (`pause_requested`): at the next step boundary
  the worker saves a checkpoint, records `paused` and is free for other jobs.
- Resuming a `paused` job queues it again; the worker that claims it continues from the last
  complete checkpoint, exactly as after a worker's death. Resuming while the pause is still only
  requested withdraws the request, and the job keeps training.
- Both are idempotent for a job already where they would put it, and a 409 for a finished job.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from tuneforge.app.core.errors import Conflict
from tuneforge.app.db.models import Job
from tuneforge.app.jobs import lifecycle
from tuneforge.contract.status import TERMINAL, JobStatus


def _refuse_finished(job: Job, verb: str) -> None:
    if job.status in TERMINAL:
        raise Conflict(f"Job {job.id} is already {job.status}; it cannot be {verb}.", code="job_finished")


def pause_job(session: Session, job: Job) -> None:
    _refuse_finished(job, "paused")
    if job.status == JobStatus.CANCEL_REQUESTED:
        raise Conflict(f"Job {job.id} is being cancelled; it cannot be paused.", code="job_cancelling")
    if not lifecycle.hold(session, job.id):
        lifecycle.request_pause(session, job.id)
    session.refresh(job)


def resume_job(session: Session, job: Job) -> bool:
    """Returns whether the job went back to `queued` (and so must be published after the commit)."""
    _refuse_finished(job, "resumed")
    if job.status == JobStatus.CANCEL_REQUESTED:
        raise Conflict(f"Job {job.id} is being cancelled; it cannot be resumed.", code="job_cancelling")
    queued = lifecycle.resume(session, job.id)
    if not queued:
        lifecycle.withdraw_pause(session, job.id)
    session.refresh(job)
    return queued

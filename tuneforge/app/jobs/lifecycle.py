"""Every change of a job's status, written once: the only module that writes `jobs.status` (a test
scans the source for any other).

Each function is one transition of the table in tuneforge/contract/status.py (`TRANSITIONS`):

1. one conditional `UPDATE jobs SET status=<target> ... WHERE id=? AND status IN (<its sources>)`,
   plus the transition's own guard where it has one (`worker_id = <the caller>` for the owning
   worker, an expired lease for the reconciler, the organization's running cap for a claim);
2. only if that update changed the row: the job's event, and the webhook the table names, queued
   in the outbox (tuneforge/app/webhooks) in the same transaction.

So two processes racing on one job cannot both apply a transition, and the one that loses writes
nothing: no event, no webhook. Each returns whether it applied. Callers pass their session; the
request or task scope commits, as before.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, func, select, update
from sqlalchemy.orm import Session, aliased

from tuneforge.app.db.models import Job
from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs import repository, results
from tuneforge.app.webhooks import service as webhooks
from tuneforge.app.webhooks.events import WebhookEvent
from tuneforge.contract.status import TERMINAL, TRAINING, TRANSITIONS, ErrorCode, EventLevel, StopReason, Transition

# The event a deferred job shows while it waits for its organization's running jobs (written once
# however often the job is deferred).
WAITING = "Waiting for a training slot"

_HAND_BACK_EVENTS: dict[StopReason, tuple[str, EventLevel]] = {
    StopReason.SHUTDOWN: ("Worker shutting down; checkpoint saved and job re-queued", "warn"),
    StopReason.RANK_LOST: (
        "A rank of this multi-device job died; job re-queued to resume from its last checkpoint",
        "warn",
    ),
    StopReason.PAUSED: ("Pause withdrawn after the checkpoint was saved; job re-queued", "info"),
}


def _apply(session: Session, transition: Transition, job_id: str, *guards: ColumnElement[bool], **values: Any) -> bool:
    """The conditional update of one transition. Returns whether it changed the job's row."""
    rule = TRANSITIONS[transition]
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(rule.sources), *guards)
        .values(status=rule.target, updated_at=utcnow(), **values)
    )
    return cast(CursorResult[Any], session.execute(stmt)).rowcount == 1


def _announce(
    session: Session,
    transition: Transition,
    job_id: str,
    *messages: str,
    level: EventLevel = "info",
    data: dict[str, Any] | None = None,
) -> None:
    """The job's event(s), its results file if the transition finished it, and the transition's
    webhook (last, so that its payload lists the results file), after its update applied."""
    for message in messages:
        repository.add_event(session, job_id, message, level=level, data=data)
    if TRANSITIONS[transition].target in TERMINAL:
        results.attach(session, job_id)
    webhook = TRANSITIONS[transition].webhook
    if webhook is not None:
        webhooks.emit_job_event(session, job_id, WebhookEvent(webhook))


def _column(session: Session, job_id: str, column: Any) -> Any:
    """One column of the job as the update left it, read from the database."""
    return session.scalar(select(column).where(Job.id == job_id))


def _owned_by(worker_id: str | None) -> ColumnElement[bool]:
    """The owning worker's guard (`== None` is SQL's `IS NULL`)."""
    return Job.worker_id == worker_id


def _expired(worker_id: str | None) -> tuple[ColumnElement[bool], ...]:
    """The reconciler's guard: still the worker it saw, and that worker's lease has passed."""
    return _owned_by(worker_id), Job.lease_expires_at < utcnow()


def _next_attempt() -> dict[str, Any]:
    """Back in the queue as a new attempt, with no owner and unsent: the caller or the reconciler
    publishes it."""
    return {"worker_id": None, "lease_expires_at": None, "attempt": Job.attempt + 1, "enqueued_at": None}


def _finished() -> dict[str, Any]:
    return {"finished_at": utcnow(), "lease_expires_at": None}


# ----------------------------------------------------------------------------- the worker


def claim(session: Session, job_id: str, worker_id: str, *, lease_seconds: int, max_running_per_org: int) -> bool:
    """Take a queued job with a lease. A second delivery of the same message finds it taken, and a
    job whose organization already has `max_running_per_org` jobs training is left queued. (Two
    workers claiming for one org in the same instant can both pass the count: the cap is soft by
    at most the number of workers racing, which is the price of not locking the org.)"""
    now = utcnow()
    other = aliased(Job)
    running = (
        select(func.count())
        .select_from(other)
        .where(other.organization_id == Job.organization_id, other.status.in_(TRAINING))
        .scalar_subquery()
    )
    claimed = _apply(
        session,
        Transition.CLAIM,
        job_id,
        running < max_running_per_org,
        worker_id=worker_id,
        lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
        started_at=func.coalesce(Job.started_at, now),
    )
    if claimed:
        attempt = _column(session, job_id, Job.attempt)
        _announce(
            session,
            Transition.CLAIM,
            job_id,
            f"Worker {worker_id} started attempt {attempt}",
            data={"attempt": attempt},
        )
    return claimed


def defer(session: Session, job_id: str, *, cap: int) -> bool:
    """The organization is at its running-jobs cap: the job stays queued, marked unsent, so the
    reconciler sends it again. Its event is written once, however often it is deferred."""
    if not _apply(session, Transition.DEFER, job_id, enqueued_at=None):
        return False
    if not (repository.last_event_message(session, job_id) or "").startswith(WAITING):
        message = f"{WAITING}: your organization has {cap} jobs running (TUNEFORGE_MAX_RUNNING_JOBS_PER_ORG)"
        _announce(session, Transition.DEFER, job_id, message)
    return True


def succeed(session: Session, job_id: str, worker_id: str, *, fine_tuned_model: str, **values: Any) -> bool:
    """The owner recorded its adapter: `values` are the job's result columns (and last progress)."""
    if not _apply(
        session,
        Transition.SUCCEED,
        job_id,
        _owned_by(worker_id),
        fine_tuned_model=fine_tuned_model,
        **_finished(),
        **values,
    ):
        return False
    messages = (f"New fine-tuned model created: {fine_tuned_model}", "The job has successfully completed")
    _announce(session, Transition.SUCCEED, job_id, *messages)
    return True


def fail(session: Session, job_id: str, worker_id: str, *, error: dict[str, Any], **values: Any) -> bool:
    """The owner's run failed: `error` is the job's `error` ({code, message, param})."""
    if not _apply(session, Transition.FAIL, job_id, _owned_by(worker_id), error=error, **_finished(), **values):
        return False
    _announce(session, Transition.FAIL, job_id, f"Job failed: {error['message']}", level="error")
    return True


def complete_cancel(session: Session, job_id: str, worker_id: str, **values: Any) -> bool:
    """The owner stopped on a cancel, or on its sweep's prune (the job keeps stop_reason `pruned`)."""
    if not _apply(session, Transition.COMPLETE_CANCEL, job_id, _owned_by(worker_id), **_finished(), **values):
        return False
    pruned = _column(session, job_id, Job.stop_reason) == StopReason.PRUNED
    message = (
        "Trial pruned by its sweep; its checkpoints are kept" if pruned else "Job cancelled; its checkpoints are kept"
    )
    _announce(session, Transition.COMPLETE_CANCEL, job_id, message)
    return True


def complete_pause(session: Session, job_id: str, worker_id: str, **values: Any) -> bool:
    """The owner saved a checkpoint and let go: the job holds its checkpoints and no worker."""
    if not _apply(
        session,
        Transition.COMPLETE_PAUSE,
        job_id,
        _owned_by(worker_id),
        worker_id=None,
        lease_expires_at=None,
        **values,
    ):
        return False
    step = _column(session, job_id, Job.step)
    _announce(
        session, Transition.COMPLETE_PAUSE, job_id, f"Job paused at step {step}; checkpoint saved", data={"step": step}
    )
    return True


def hand_back(session: Session, job_id: str, worker_id: str, *, why: StopReason) -> bool:
    """The owner gives its running job back to the queue as a new attempt, which resumes from the
    last complete checkpoint. `why`: SHUTDOWN, RANK_LOST, or PAUSED (a pause withdrawn after the
    checkpoint was saved). The caller publishes it once committed."""
    if not _apply(session, Transition.HAND_BACK, job_id, _owned_by(worker_id), **_next_attempt()):
        return False
    message, level = _HAND_BACK_EVENTS[why]
    _announce(session, Transition.HAND_BACK, job_id, message, level=level)
    return True


# ----------------------------------------------------------------------------- users (and sweeps)


def cancel(session: Session, job_id: str, *, note: str | None = None) -> bool:
    """Cancel a job no worker holds: waiting, or paused. `note` says why, after the event's text."""
    if not _apply(session, Transition.CANCEL, job_id, finished_at=utcnow()):
        return False
    _announce(session, Transition.CANCEL, job_id, _noted("Job cancelled before it started", note))
    return True


def request_cancel(session: Session, job_id: str, *, note: str | None = None) -> bool:
    """Ask a training job's worker to stop; it records `cancelled` (complete_cancel) within seconds."""
    if not _apply(session, Transition.REQUEST_CANCEL, job_id):
        return False
    _announce(
        session,
        Transition.REQUEST_CANCEL,
        job_id,
        _noted("Cancellation requested; the worker stops within seconds", note),
    )
    return True


def prune(session: Session, job_id: str, *, message: str, data: dict[str, Any]) -> bool:
    """A sweep's pruner stops a running trial: its worker reads `cancel_requested` with stop_reason
    `pruned`, and the job ends `cancelled` with that reason (a user's cancel has none). `message`
    and `data`: the sweep's verdict, for the job's event."""
    if not _apply(session, Transition.PRUNE, job_id, stop_reason=StopReason.PRUNED.value):
        return False
    _announce(session, Transition.PRUNE, job_id, message, level="warn", data=data)
    return True


def hold(session: Session, job_id: str) -> bool:
    """Pause a job no worker has claimed yet: it stays out of the queue until resumed (a message
    already sent finds it not `queued`, and the reconciler sends only `queued` jobs)."""
    if not _apply(session, Transition.HOLD, job_id, enqueued_at=None):
        return False
    _announce(session, Transition.HOLD, job_id, "Job paused before it started; resume queues it")
    return True


def request_pause(session: Session, job_id: str) -> bool:
    """Ask a running job's worker to checkpoint and stop; it records `paused` (complete_pause)."""
    if not _apply(session, Transition.REQUEST_PAUSE, job_id):
        return False
    message = "Pause requested; the worker saves a checkpoint and stops within seconds"
    _announce(session, Transition.REQUEST_PAUSE, job_id, message)
    return True


def withdraw_pause(session: Session, job_id: str) -> bool:
    """Resume before the worker stopped: it simply keeps training."""
    if not _apply(session, Transition.WITHDRAW_PAUSE, job_id):
        return False
    _announce(session, Transition.WITHDRAW_PAUSE, job_id, "Pause withdrawn; the job keeps training")
    return True


def resume(session: Session, job_id: str) -> bool:
    """Back to `queued`, unsent: the caller publishes it after the commit (and the reconciler would,
    if that fails). The attempt count is kept: a pause is not a failure."""
    if not _apply(session, Transition.RESUME, job_id, enqueued_at=None):
        return False
    _announce(session, Transition.RESUME, job_id, "Job resumed; queued to continue from its last checkpoint")
    return True


# ----------------------------------------------------------------------------- the reconciler
# For a job whose lease expired: `worker_id` is the owner the reconciler read, so a job another
# worker claimed meanwhile (or a lease renewed meanwhile) is left alone.


def requeue_expired(session: Session, job_id: str, worker_id: str | None, *, max_attempts: int) -> bool:
    """A running job lost its worker with attempts left: queued again as the next attempt."""
    if not _apply(
        session,
        Transition.REQUEUE_EXPIRED,
        job_id,
        *_expired(worker_id),
        Job.attempt < max_attempts,
        **_next_attempt(),
    ):
        return False
    attempt = _column(session, job_id, Job.attempt)
    _announce(session, Transition.REQUEUE_EXPIRED, job_id, f"Worker lost; re-queued as attempt {attempt}", level="warn")
    return True


def fail_expired(session: Session, job_id: str, worker_id: str | None, *, max_attempts: int) -> bool:
    """A running job lost its worker on its last attempt: failed with `worker_lost`."""
    message = f"The worker stopped answering and all {max_attempts} attempts are used up."
    error = {"code": ErrorCode.WORKER_LOST, "message": message, "param": None}
    if not _apply(
        session,
        Transition.FAIL_EXPIRED,
        job_id,
        *_expired(worker_id),
        Job.attempt >= max_attempts,
        error=error,
        **_finished(),
    ):
        return False
    _announce(session, Transition.FAIL_EXPIRED, job_id, message, level="error")
    return True


def cancel_expired(session: Session, job_id: str, worker_id: str | None) -> bool:
    """A job being cancelled lost its worker: it is cancelled."""
    if not _apply(session, Transition.CANCEL_EXPIRED, job_id, *_expired(worker_id), error=None, **_finished()):
        return False
    _announce(session, Transition.CANCEL_EXPIRED, job_id, "Job cancelled (its worker stopped answering)")
    return True


def pause_expired(session: Session, job_id: str, worker_id: str | None) -> bool:
    """A job being paused lost its worker: it is paused, and keeps its last complete checkpoint."""
    if not _apply(
        session, Transition.PAUSE_EXPIRED, job_id, *_expired(worker_id), worker_id=None, lease_expires_at=None
    ):
        return False
    message = "Job paused (its worker stopped answering); resume continues from the last checkpoint"
    _announce(session, Transition.PAUSE_EXPIRED, job_id, message)
    return True


def _noted(message: str, note: str | None) -> str:
    return f"{message} ({note})" if note else message

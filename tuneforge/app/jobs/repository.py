"""Every query on jobs, their events, metrics and checkpoints, except the changes of a job's status:
those are tuneforge/app/jobs/lifecycle.py's (conditional updates, so two processes racing on one job
cannot both win)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Result, and_, delete, func, select, update
from sqlalchemy.orm import Session

from tuneforge.app.core.ids import new_id
from tuneforge.app.db import paging
from tuneforge.app.db.models import Checkpoint, Job, JobEvent, JobMetric, JobSample
from tuneforge.app.db.types import utcnow
from tuneforge.contract.status import LIVE, TRAINING, EventLevel, EventType, JobStatus, statuses_shown_as

# What a metric point may set; anything else a reporter sends is ignored.
METRIC_FIELDS = frozenset(
    ("epoch", "loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second", "num_tokens", "extra")
)


def _changed(result: Result[Any]) -> bool:
    """Whether a conditional UPDATE matched its one row (it lost the race otherwise)."""
    return cast(CursorResult[Any], result).rowcount == 1


# ----------------------------------------------------------------------------- reads


def get(session: Session, org_id: str | None, job_id: str) -> Job | None:
    stmt = select(Job).where(Job.id == job_id)
    if org_id is not None:
        stmt = stmt.where(Job.organization_id == org_id)
    return session.scalar(stmt)


def count_by_status(session: Session, org_id: str, statuses: Iterable[JobStatus]) -> int:
    stmt = select(func.count()).select_from(Job).where(Job.organization_id == org_id, Job.status.in_(tuple(statuses)))
    return int(session.scalar(stmt) or 0)


def counts_by_status(session: Session) -> dict[JobStatus, int]:
    """Every organization's jobs, counted by status (the operator's view)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).tuples()
    return {status: int(count) for status, count in rows}


def live_using_file(session: Session, org_id: str, file_id: str) -> list[str]:
    """Ids of the organization's unfinished jobs that train or validate on a file."""
    stmt = select(Job.id).where(
        Job.organization_id == org_id,
        Job.status.in_(LIVE),
        (Job.training_file == file_id) | (Job.validation_file == file_id),
    )
    return list(session.scalars(stmt))


def get_by_idempotency_key(session: Session, org_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.organization_id == org_id, Job.idempotency_key == key))


def list_page(
    session: Session,
    org_id: str | None,
    *,
    after: str | None,
    limit: int,
    status: JobStatus | None = None,
    model: str | None = None,
    metadata: dict[str, str] | None = None,
) -> list[Job]:
    stmt = select(Job)
    if org_id is not None:  # None: an admin listing every organization
        stmt = stmt.where(Job.organization_id == org_id)
    if status:
        # `running` also matches jobs being cancelled or paused, which `status` shows as running.
        stmt = stmt.where(Job.status.in_(statuses_shown_as(status)))
    if model:
        stmt = stmt.where(Job.model == model)
    for key, value in (metadata or {}).items():
        stmt = stmt.where(Job.job_metadata[key].as_string() == value)
    scope = [Job.organization_id == org_id] if org_id is not None else []
    return paging.page(session, stmt, Job, after=after, limit=limit, cursor_scope=scope)


def events_page(session: Session, job_id: str, *, after: str | None, limit: int) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    return paging.page(session, stmt, JobEvent, after=after, limit=limit, cursor_scope=[JobEvent.job_id == job_id])


def events_after_seq(session: Session, job_id: str, seq: int, limit: int = 500) -> list[JobEvent]:
    """Oldest first: what a stream has not sent yet."""
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > seq).order_by(JobEvent.seq).limit(limit)
    return list(session.scalars(stmt))


def event_seq(session: Session, job_id: str, event_id: str) -> int:
    """The position of one of the job's events (0 for an id that is not one: the stream starts from the first)."""
    stmt = select(JobEvent.seq).where(JobEvent.job_id == job_id, JobEvent.id == event_id)
    return int(session.scalar(stmt) or 0)


def checkpoints_page(session: Session, job_id: str, *, after: str | None, limit: int) -> list[Checkpoint]:
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return paging.page(session, stmt, Checkpoint, after=after, limit=limit, cursor_scope=[Checkpoint.job_id == job_id])


def checkpoint_at(session: Session, job_id: str, step: int) -> Checkpoint | None:
    return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step_number == step))


def checkpoint_by_id(session: Session, org_id: str, checkpoint_id: str) -> tuple[Checkpoint, Job] | None:
    """A checkpoint and its job, only if the job is the organization's."""
    stmt = (
        select(Checkpoint, Job)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.id == checkpoint_id, Job.organization_id == org_id)
    )
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row is not None else None


def metrics(session: Session, job_id: str, *, since_step: int | None) -> Sequence[JobMetric]:
    stmt = select(JobMetric).where(JobMetric.job_id == job_id)
    if since_step is not None:
        stmt = stmt.where(JobMetric.step > since_step)
    return session.scalars(stmt.order_by(JobMetric.step)).all()


def metrics_sampled(
    session: Session, job_id: str, *, since_step: int | None, max_points: int
) -> tuple[int, list[JobMetric]]:
    """(total points, every k-th point plus the last), chosen in SQL: a dashboard asking for 500 of
    100k points reads 500 rows, not 100k (bench/control_plane.py measures it)."""
    where = [JobMetric.job_id == job_id]
    if since_step is not None:
        where.append(JobMetric.step > since_step)
    total = int(session.scalar(select(func.count()).select_from(JobMetric).where(*where)) or 0)
    stmt = select(JobMetric).where(*where)
    if total > max_points:
        stride = -(-total // max_points)
        rn = func.row_number().over(order_by=JobMetric.step).label("rn")
        ranked = select(JobMetric.step, rn).where(*where).subquery()
        keep = select(ranked.c.step).where(((ranked.c.rn - 1) % stride == 0) | (ranked.c.rn == total))
        stmt = stmt.where(JobMetric.step.in_(keep))
    rows = list(session.scalars(stmt.order_by(JobMetric.step)))
    if len(rows) > max_points:  # the stride's points plus the last can be one too many
        rows = [*rows[: max_points - 1], rows[-1]]
    return total, rows


# ----------------------------------------------------------------------------- writes


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: EventLevel = "info",
    type_: EventType = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(id=new_id("ftevent"), job_id=job_id, message=message, level=level, type=type_, data=data)
    session.add(event)
    session.flush()
    return event


def last_event_message(session: Session, job_id: str) -> str | None:
    stmt = select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.seq.desc()).limit(1)
    return session.scalar(stmt)


def mark_enqueued(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(enqueued_at=utcnow()))


# ----------------------------------------------------------------------------- the worker's heartbeat


def stop_reason(session: Session, job_id: str) -> str | None:
    """Why a `cancel_requested` job is stopping: null for a user's cancel, `pruned` for a sweep's."""
    return session.scalar(select(Job.stop_reason).where(Job.id == job_id))


def renew_lease(session: Session, job_id: str, worker_id: str, lease_seconds: int, **progress: Any) -> JobStatus | None:
    """Extend the lease and record progress. Returns the job's status, or None if the lease is lost."""
    now = utcnow()
    owned = and_(Job.id == job_id, Job.worker_id == worker_id, Job.status.in_(TRAINING))
    result = session.execute(
        update(Job)
        .where(owned)
        .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds), updated_at=now, **progress)
    )
    if not _changed(result):
        return None
    return session.scalar(select(Job.status).where(Job.id == job_id))


def upsert_metrics(session: Session, job_id: str, points: Iterable[dict[str, Any]]) -> None:
    """Write a batch of points, merged into any row already stored for the step: a step's eval point
    may arrive in a later batch than its train point, and a resumed attempt that logs a step again
    overwrites what the dead attempt wrote there instead of doubling it."""
    points = list(points)
    if not points:
        return
    steps = [p["step"] for p in points]
    existing = {
        m.step: m
        for m in session.scalars(select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step.in_(steps)))
    }
    for p in points:
        row = existing.get(p["step"])
        if row is None:
            row = existing[p["step"]] = JobMetric(job_id=job_id, step=p["step"])
            session.add(row)
        for key, value in p.items():
            if value is not None and key in METRIC_FIELDS:
                if key == "extra" and isinstance(row.extra, dict):  # a step's train and eval extras merge
                    value = {**row.extra, **value}
                setattr(row, key, value)
    session.flush()


def replace_samples(session: Session, job_id: str, step: int, items: Sequence[dict[str, Any]]) -> None:
    """A step's sample generations; a resumed attempt that samples the step again replaces them."""
    session.execute(delete(JobSample).where(JobSample.job_id == job_id, JobSample.step == step))
    for i, item in enumerate(items):
        session.add(
            JobSample(
                job_id=job_id,
                step=step,
                index=i,
                prompt=str(item["prompt"]),
                output=str(item["output"]),
                tokens=int(item.get("tokens", 0)),
            )
        )
    session.flush()


def samples(session: Session, job_id: str, *, since_step: int | None) -> Sequence[JobSample]:
    stmt = select(JobSample).where(JobSample.job_id == job_id)
    if since_step is not None:
        stmt = stmt.where(JobSample.step > since_step)
    return session.scalars(stmt.order_by(JobSample.step, JobSample.index)).all()


def add_checkpoint(
    session: Session, job_id: str, step: int, path: str, manifest: dict[str, str], metrics: dict[str, Any]
) -> Checkpoint:
    session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step_number == step))
    ckpt = Checkpoint(
        id=new_id("ftckpt"), job_id=job_id, step_number=step, path=path, manifest=manifest, metrics=metrics
    )
    session.add(ckpt)
    session.flush()
    return ckpt


# ----------------------------------------------------------------------------- reconciler


def stale_queued(session: Session, older_than: dt.datetime) -> list[str]:
    stmt = select(Job.id).where(
        Job.status == JobStatus.QUEUED, (Job.enqueued_at.is_(None)) | (Job.enqueued_at < older_than)
    )
    return list(session.scalars(stmt))


def expired_leases(session: Session, now: dt.datetime) -> list[Job]:
    stmt = select(Job).where(Job.status.in_(TRAINING), Job.lease_expires_at < now)
    return list(session.scalars(stmt))

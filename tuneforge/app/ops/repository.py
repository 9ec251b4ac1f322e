"""The queries behind /metrics: every organization's jobs, read on each scrape."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.app.db.models import Job, JobMetric
from tuneforge.contract.status import TERMINAL, TRAINING, JobStatus


def started_count(session: Session) -> int:
    """Jobs a worker ever claimed (a re-queued attempt counts once: the row keeps its first start)."""
    return int(session.scalar(select(func.count()).select_from(Job).where(Job.started_at.is_not(None))) or 0)


def oldest_enqueued(session: Session) -> dt.datetime | None:
    """When the longest-waiting queued job was (last) published."""
    stmt = select(func.min(func.coalesce(Job.enqueued_at, Job.created_at))).where(Job.status == JobStatus.QUEUED)
    return session.scalar(stmt)


def trained_tokens(session: Session) -> int:
    stmt = select(func.coalesce(func.sum(Job.trained_tokens), 0)).where(Job.status.in_(TERMINAL))
    return int(session.scalar(stmt) or 0)


def training_throughput(session: Session) -> list[tuple[str, float]]:
    """(worker id, tokens/s of its job's latest logged step) for every job training now."""
    latest = (
        select(JobMetric.job_id, func.max(JobMetric.step).label("step"))
        .join(Job, Job.id == JobMetric.job_id)
        .where(Job.status.in_(TRAINING), JobMetric.tokens_per_second.is_not(None))
        .group_by(JobMetric.job_id)
        .subquery()
    )
    stmt = (
        select(Job.worker_id, JobMetric.tokens_per_second)
        .join(latest, latest.c.job_id == Job.id)
        .join(JobMetric, (JobMetric.job_id == latest.c.job_id) & (JobMetric.step == latest.c.step))
        .where(Job.worker_id.is_not(None))
    )
    return [(str(w), float(t)) for w, t in session.execute(stmt).tuples() if t is not None]

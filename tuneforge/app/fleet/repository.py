"""Every query on worker presence and on the queued jobs waiting for a GPU class."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tuneforge.app.db.models import Job, WorkerPresence
from tuneforge.app.db.types import utcnow
from tuneforge.contract.status import JobStatus


def beat(session: Session, worker_id: str, queues: list[str]) -> None:
    now = utcnow()
    result = session.execute(
        update(WorkerPresence).where(WorkerPresence.worker_id == worker_id).values(queues=queues, last_seen=now)
    )
    if getattr(result, "rowcount", 0) == 0:
        session.add(WorkerPresence(worker_id=worker_id, queues=queues, last_seen=now))
        session.flush()


def leave(session: Session, worker_id: str) -> None:
    session.execute(delete(WorkerPresence).where(WorkerPresence.worker_id == worker_id))


def live_queues(session: Session, since: dt.datetime) -> set[str]:
    rows = session.scalars(select(WorkerPresence.queues).where(WorkerPresence.last_seen >= since))
    return {q for queues in rows for q in queues}


def forget_before(session: Session, before: dt.datetime) -> None:
    session.execute(delete(WorkerPresence).where(WorkerPresence.last_seen < before))


def queued_by_class(session: Session) -> list[tuple[str, str | None]]:
    """(job id, gpu class) of every queued job."""
    rows = session.execute(select(Job.id, Job.gpu_class).where(Job.status == JobStatus.QUEUED))
    return [(job_id, gpu_class) for job_id, gpu_class in rows.tuples()]


def gpu_class_of(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.gpu_class).where(Job.id == job_id))

"""Liveness, readiness and the operator's counts."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from tuneforge.app.db.engine import get_sessionmaker
from tuneforge.app.jobs import repository as jobs_repository
from tuneforge.contract.status import JobStatus


def database_problem() -> str | None:
    """None when the database answers, else the error's type name."""
    try:
        with get_sessionmaker()() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return type(exc).__name__


def broker_problem(url: str) -> str | None:
    """None when the broker accepts a connection, else the error's type name."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return type(exc).__name__


def job_counts(session: Session) -> dict[JobStatus, int]:
    return jobs_repository.counts_by_status(session)

"""Every query on sweeps and their trials. State changes are conditional updates, so several API
processes driving the same sweep cannot double-apply one (two cannot both create trial n, or finish the
sweep twice). A trial's status, pruned or cancelled, changes through tuneforge/app/jobs/lifecycle.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Result, select, update
from sqlalchemy.orm import Session

from tuneforge.app.db import paging
from tuneforge.app.db.models import Job, JobMetric, Sweep, SweepTrial
from tuneforge.app.db.types import utcnow
from tuneforge.contract.status import SweepStatus


def _changed(result: Result[Any]) -> bool:
    return cast(CursorResult[Any], result).rowcount == 1


# ----------------------------------------------------------------------------- reads


def get(session: Session, org_id: str | None, sweep_id: str) -> Sweep | None:
    stmt = select(Sweep).where(Sweep.id == sweep_id)
    if org_id is not None:
        stmt = stmt.where(Sweep.organization_id == org_id)
    return session.scalar(stmt)


def list_page(session: Session, org_id: str | None, *, after: str | None, limit: int) -> list[Sweep]:
    stmt = select(Sweep)
    scope = []
    if org_id is not None:
        stmt = stmt.where(Sweep.organization_id == org_id)
        scope = [Sweep.organization_id == org_id]
    return paging.page(session, stmt, Sweep, after=after, limit=limit, cursor_scope=scope)


def running_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Sweep.id).where(Sweep.status == SweepStatus.RUNNING).order_by(Sweep.seq)))


def trials(session: Session, sweep_id: str) -> list[tuple[SweepTrial, Job]]:
    """The sweep's trials with their jobs, by trial number."""
    stmt = (
        select(SweepTrial, Job)
        .join(Job, Job.id == SweepTrial.job_id)
        .where(SweepTrial.sweep_id == sweep_id)
        .order_by(SweepTrial.number)
    )
    return [(t, j) for t, j in session.execute(stmt).tuples()]


def eval_points(
    session: Session, job_ids: Sequence[str]
) -> dict[str, list[tuple[int, float | None, Any, dt.datetime]]]:
    """Each job's evaluation points: (step, eval_loss, the evaluation's other metrics, when written)."""
    out: dict[str, list[tuple[int, float | None, Any, dt.datetime]]] = {j: [] for j in job_ids}
    if not job_ids:
        return out
    stmt = (
        select(JobMetric.job_id, JobMetric.step, JobMetric.eval_loss, JobMetric.extra, JobMetric.created_at)
        .where(JobMetric.job_id.in_(tuple(job_ids)), JobMetric.eval_loss.is_not(None))
        .order_by(JobMetric.step)
    )
    for job_id, step, eval_loss, extra, created_at in session.execute(stmt).tuples():
        out[job_id].append((step, eval_loss, extra, created_at))
    return out


# ----------------------------------------------------------------------------- writes


def take_trial_number(session: Session, sweep_id: str, number: int) -> bool:
    """Claim trial `number` for this process: only the update that moves trials_created from n to
    n+1 wins. The trial's job and row are written in the same transaction."""
    result = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING, Sweep.trials_created == number)
        .values(trials_created=number + 1, updated_at=utcnow())
    )
    return _changed(result)


def add_trial(session: Session, sweep_id: str, number: int, job_id: str, params: dict[str, Any]) -> SweepTrial:
    trial = SweepTrial(sweep_id=sweep_id, number=number, job_id=job_id, params=params)
    session.add(trial)
    session.flush()
    return trial


def finish(
    session: Session, sweep_id: str, status: SweepStatus, best_job_id: str | None, error: dict[str, Any] | None
) -> bool:
    now = utcnow()
    result = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING)
        .values(status=status, best_job_id=best_job_id, error=error, finished_at=now, updated_at=now)
    )
    return _changed(result)

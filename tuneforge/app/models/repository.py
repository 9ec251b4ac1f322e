"""Every query of the models domain: an organization's fine-tuned models are its succeeded jobs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.app.db.models import Job
from tuneforge.contract.status import JobStatus

MAX_LISTED = 10_000


def fine_tuned_jobs(session: Session, org_id: str) -> Sequence[Job]:
    """The organization's jobs that published a fine-tuned model, newest first."""
    return session.scalars(
        select(Job)
        .where(
            Job.organization_id == org_id,
            Job.status == JobStatus.SUCCEEDED,
            Job.fine_tuned_model.is_not(None),
            Job.model_deleted_at.is_(None),
        )
        .order_by(Job.seq.desc())
        .limit(MAX_LISTED)
    ).all()


def job_in_org(session: Session, org_id: str, job_id: str) -> Job | None:
    """A job of this organization only: a model id is never resolved across tenants, admin or not."""
    return session.scalars(select(Job).where(Job.organization_id == org_id, Job.id == job_id)).first()


def job_by_id(session: Session, job_id: str) -> Job | None:
    """Unscoped: only for an id the caller was granted (a checkpoint permission)."""
    return session.scalars(select(Job).where(Job.id == job_id)).first()

"""Every query of checkpoint permissions. A permission names the exact `ft:` id shared (a job's
fine_tuned_model, or one checkpoint's), the organization that owns it and the one it is shared with."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tuneforge.app.db import paging
from tuneforge.app.db.models import Checkpoint, CheckpointPermission, Job, Organization


def granted(session: Session, grantee_id: str, model_id: str) -> bool:
    """Whether `model_id` (exactly) is shared with organization `grantee_id`."""
    stmt = select(CheckpointPermission.id).where(
        CheckpointPermission.model_id == model_id, CheckpointPermission.grantee_id == grantee_id
    )
    return session.scalar(stmt.limit(1)) is not None


def shared_with(session: Session, grantee_id: str, limit: int) -> Sequence[tuple[str, Job]]:
    """(model id, its job) of every model shared with the organization, newest grant first."""
    stmt = (
        select(CheckpointPermission.model_id, Job)
        .join(Job, Job.id == CheckpointPermission.job_id)
        .where(CheckpointPermission.grantee_id == grantee_id)
        .order_by(CheckpointPermission.seq.desc())
        .limit(limit)
    )
    return [(row[0], row[1]) for row in session.execute(stmt)]


def existing(session: Session, model_id: str, grantee_ids: Sequence[str]) -> dict[str, CheckpointPermission]:
    stmt = select(CheckpointPermission).where(
        CheckpointPermission.model_id == model_id, CheckpointPermission.grantee_id.in_(grantee_ids)
    )
    return {p.grantee_id: p for p in session.scalars(stmt)}


def known_organizations(session: Session, org_ids: Sequence[str]) -> set[str]:
    return set(session.scalars(select(Organization.id).where(Organization.id.in_(org_ids))))


def list_page(
    session: Session, model_id: str, *, grantee_id: str | None, after: str | None, limit: int, ascending: bool
) -> list[CheckpointPermission]:
    stmt = select(CheckpointPermission).where(CheckpointPermission.model_id == model_id)
    if grantee_id is not None:
        stmt = stmt.where(CheckpointPermission.grantee_id == grantee_id)
    scope = [CheckpointPermission.model_id == model_id]
    return paging.page(
        session, stmt, CheckpointPermission, after=after, limit=limit, ascending=ascending, cursor_scope=scope
    )


def get(session: Session, model_id: str, permission_id: str) -> CheckpointPermission | None:
    stmt = select(CheckpointPermission).where(
        CheckpointPermission.id == permission_id, CheckpointPermission.model_id == model_id
    )
    return session.scalar(stmt)


def delete_for_model(session: Session, model_id: str) -> int:
    """Every grant of one model id (its model was deleted). Returns how many."""
    result = session.execute(delete(CheckpointPermission).where(CheckpointPermission.model_id == model_id))
    return int(getattr(result, "rowcount", 0) or 0)


def checkpoint_with_job(session: Session, checkpoint_id: str) -> tuple[Checkpoint, Job] | None:
    """Unscoped: a checkpoint (`ftckpt-...`) and its job, for the caller to check a grant on."""
    stmt = select(Checkpoint, Job).join(Job, Job.id == Checkpoint.job_id).where(Checkpoint.id == checkpoint_id)
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row is not None else None

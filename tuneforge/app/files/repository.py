from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.app.auth import repository as auth_repository
from tuneforge.app.db import paging
from tuneforge.app.db.models import File


def get(session: Session, org_id: str | None, file_id: str) -> File | None:
    """Scoped to `org_id`; None (an admin read) is unscoped."""
    stmt = select(File).where(File.id == file_id)
    if org_id is not None:
        stmt = stmt.where(File.organization_id == org_id)
    return session.scalar(stmt)


def get_internal(session: Session, file_id: str) -> File | None:
    """Unscoped: for the worker, which acts for the job's own organization."""
    return session.scalar(select(File).where(File.id == file_id))


def get_by_idempotency_key(session: Session, org_id: str, key: str) -> File | None:
    return session.scalar(select(File).where(File.organization_id == org_id, File.idempotency_key == key))


def list_page(
    session: Session, org_id: str, *, purpose: str | None, after: str | None, limit: int, ascending: bool
) -> list[File]:
    stmt = select(File).where(File.organization_id == org_id)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    scope = [File.organization_id == org_id]
    return paging.page(session, stmt, File, after=after, limit=limit, ascending=ascending, cursor_scope=scope)


def stored_bytes(session: Session, org_id: str) -> int:
    return int(
        session.scalar(select(func.coalesce(func.sum(File.bytes), 0)).where(File.organization_id == org_id)) or 0
    )


def lock_org(session: Session, org_id: str) -> None:
    """Hold the organization's row until the transaction ends, so that two uploads checking the
    storage quota at once take turns (the one lock on an organization: auth.repository.lock_org)."""
    auth_repository.lock_org(session, org_id)

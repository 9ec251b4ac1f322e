"""Every query on uploads and their parts. State changes are conditional updates, so that two API
processes (a part and a cancel, two completes, the sweeper and a complete) cannot both win."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import CursorResult, and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from tuneforge.app.db.models import Upload, UploadPart
from tuneforge.app.uploads.status import UploadStatus

ENDED = (UploadStatus.COMPLETED, UploadStatus.CANCELLED, UploadStatus.EXPIRED)


def get(session: Session, org_id: str, upload_id: str) -> Upload | None:
    return session.scalar(select(Upload).where(Upload.id == upload_id, Upload.organization_id == org_id))


def get_internal(session: Session, upload_id: str) -> Upload:
    """Unscoped: for the completing thread, which already checked the caller's organization."""
    return session.scalars(select(Upload).where(Upload.id == upload_id)).one()


def add(session: Session, upload: Upload) -> Upload:
    session.add(upload)
    session.flush()
    return upload


def _free(now: dt.datetime, lease_start: dt.datetime) -> ColumnElement[bool]:
    """Pending, not expired, and not being completed (or its completer's lease ran out)."""
    return and_(
        Upload.status == UploadStatus.PENDING,
        Upload.expires_at > now,
        or_(Upload.completing_since.is_(None), Upload.completing_since < lease_start),
    )


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def reserved_bytes(session: Session, org_id: str, now: dt.datetime) -> int:
    """What the organization's live uploads hold against its quota: each its declared bytes, or
    what its parts hold if that is more."""
    held = case((Upload.received_bytes > Upload.bytes, Upload.received_bytes), else_=Upload.bytes)
    stmt = select(func.coalesce(func.sum(held), 0)).where(
        Upload.organization_id == org_id,
        Upload.status == UploadStatus.PENDING,
        # One being completed still counts after its expiry time: its file does not exist yet.
        or_(Upload.expires_at > now, Upload.completing_since.is_not(None)),
    )
    return int(session.scalar(stmt) or 0)


def add_part_bytes(
    session: Session, upload_id: str, size: int, *, now: dt.datetime, lease_start: dt.datetime, max_total: int
) -> bool:
    """Count a stored part against its upload, if the upload still takes parts and stays under
    `max_total` bytes."""
    stmt = (
        update(Upload)
        .where(Upload.id == upload_id, _free(now, lease_start), Upload.received_bytes + size <= max_total)
        .values(received_bytes=Upload.received_bytes + size, n_parts=Upload.n_parts + 1)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(session.execute(stmt)) == 1


def add_part(session: Session, part: UploadPart) -> UploadPart:
    session.add(part)
    session.flush()
    return part


def parts(session: Session, upload_id: str, part_ids: Sequence[str]) -> dict[str, UploadPart]:
    rows = session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id, UploadPart.id.in_(part_ids)))
    return {p.id: p for p in rows}


def claim_completion(session: Session, upload_id: str, *, now: dt.datetime, lease_start: dt.datetime) -> bool:
    stmt = (
        update(Upload)
        .where(Upload.id == upload_id, _free(now, lease_start))
        .values(completing_since=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(session.execute(stmt)) == 1


def release_completion(session: Session, upload_id: str, claimed_at: dt.datetime) -> None:
    stmt = (
        update(Upload)
        .where(Upload.id == upload_id, Upload.completing_since == claimed_at)
        .values(completing_since=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)


def mark_completed(session: Session, upload_id: str, claimed_at: dt.datetime, file_id: str) -> bool:
    """Only for the request whose claim still stands."""
    stmt = (
        update(Upload)
        .where(Upload.id == upload_id, Upload.status == UploadStatus.PENDING, Upload.completing_since == claimed_at)
        .values(status=UploadStatus.COMPLETED, file_id=file_id, completing_since=None)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(session.execute(stmt)) == 1


def mark_cancelled(session: Session, upload_id: str, *, now: dt.datetime, lease_start: dt.datetime) -> bool:
    stmt = (
        update(Upload)
        .where(Upload.id == upload_id, _free(now, lease_start))
        .values(status=UploadStatus.CANCELLED)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(session.execute(stmt)) == 1


def expire_due(session: Session, *, now: dt.datetime, lease_start: dt.datetime, limit: int) -> list[str]:
    """Mark up to `limit` pending uploads past their expiry (and not being completed) expired."""
    due = session.scalars(
        select(Upload.id)
        .where(
            Upload.status == UploadStatus.PENDING,
            Upload.expires_at <= now,
            or_(Upload.completing_since.is_(None), Upload.completing_since < lease_start),
        )
        .order_by(Upload.expires_at)
        .limit(limit)
    ).all()
    expired = []
    for upload_id in due:
        stmt = (
            update(Upload)
            .where(
                Upload.id == upload_id,
                Upload.status == UploadStatus.PENDING,
                Upload.expires_at <= now,
                or_(Upload.completing_since.is_(None), Upload.completing_since < lease_start),
            )
            .values(status=UploadStatus.EXPIRED)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(session.execute(stmt)) == 1:
            expired.append(upload_id)
    return expired


def with_parts_left(session: Session, limit: int) -> list[Upload]:
    """Ended uploads whose parts are still in the store (a removal that failed, or was never tried)."""
    return list(
        session.scalars(
            select(Upload)
            .where(Upload.status.in_(ENDED), Upload.parts_removed.is_(False))
            .order_by(Upload.seq)
            .limit(limit)
        )
    )


def mark_parts_removed(session: Session, upload_id: str) -> None:
    session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
    session.execute(
        update(Upload)
        .where(Upload.id == upload_id)
        .values(parts_removed=True)
        .execution_options(synchronize_session=False)
    )

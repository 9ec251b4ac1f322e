"""The per-organization storage quota: files plus pending uploads, `TUNEFORGE_ORG_STORAGE_QUOTA_GB`.

A pending upload counts for what it reserved (its declared `bytes`) or for what its parts hold, if
that is more, from its creation until it completes (then its file counts), is cancelled or expires.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import PayloadTooLarge
from tuneforge.app.db.types import utcnow
from tuneforge.app.files import repository
from tuneforge.app.uploads import repository as uploads_repository


def limit_bytes(settings: Settings) -> int:
    return int(settings.org_storage_quota_gb * (1 << 30))


def used_bytes(session: Session, org_id: str) -> int:
    return repository.stored_bytes(session, org_id) + uploads_repository.reserved_bytes(session, org_id, utcnow())


def lock(session: Session, org_id: str) -> None:
    """Hold the organization's row until the caller commits: changes to what it stores take turns."""
    repository.lock_org(session, org_id)


def check(session: Session, settings: Settings, org_id: str, *, adding: int, param: str) -> None:
    """Raise 413 `storage_quota_exceeded` when `adding` more bytes would take the organization over
    its quota. Locks the organization's row until the caller commits, so concurrent checks queue."""
    lock(session, org_id)
    used, limit = used_bytes(session, org_id), limit_bytes(settings)
    if used + adding > limit:
        raise PayloadTooLarge(
            f"This needs {adding} more bytes, and the organization already stores or has reserved {used} bytes "
            f"(files plus pending uploads): over its storage quota of {settings.org_storage_quota_gb:g} GB "
            "(TUNEFORGE_ORG_STORAGE_QUOTA_GB). Delete files or cancel pending uploads first.",
            param=param,
            code="storage_quota_exceeded",
        )

"""Every query on organizations and API keys."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneforge.app.db.models import ApiKey, Organization
from tuneforge.app.db.types import utcnow


def org_by_name(session: Session, name: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.name == name))


def lock_org(session: Session, org_id: str) -> None:
    """Hold the organization's row until the transaction ends, so that per-organization checks made
    after it (a cap counted, then a row added) cannot interleave with another request's.

    An UPDATE rather than SELECT ... FOR UPDATE because it locks on both databases: a row lock on
    PostgreSQL, and on SQLite the database's write lock (SQLite has no row locks; its writers queue
    on busy_timeout). Python's sqlite3 opens the transaction at this statement, so the reads after
    it see every write committed before it."""
    session.execute(update(Organization).where(Organization.id == org_id).values(name=Organization.name))


def add_org(session: Session, org: Organization) -> Organization:
    session.add(org)
    session.flush()
    return org


def add_key(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


def keys_with_orgs(session: Session) -> list[tuple[ApiKey, Organization]]:
    rows = session.execute(
        select(ApiKey, Organization)
        .join(Organization, Organization.id == ApiKey.organization_id)
        .order_by(ApiKey.created_at)
    )
    return [(k, o) for k, o in rows.tuples()]


def revoke(session: Session, key_id: str) -> bool:
    """Revoke an active key. False when there is no such key, or it was already revoked."""
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    session.flush()
    return True

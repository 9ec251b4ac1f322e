"""Organizations and API keys. Keys are random, shown once, and stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.ids import new_id
from app.db.models import ApiKey, Organization
from app.db.types import utcnow

KEY_PREFIX = "tf-"


@dataclass(frozen=True)
class Principal:
    organization_id: str
    key_id: str
    is_admin: bool

    def scope(self, *, write: bool = False) -> str | None:
        """The organization a query is limited to. An admin key reads every organization's
        resources (an ops dashboard) but changes only its own; None means unscoped."""
        return None if self.is_admin and not write else self.organization_id


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_org(session: Session, name: str) -> Organization:
    org = session.scalar(select(Organization).where(Organization.name == name))
    if org is None:
        org = Organization(id=new_id("org"), name=name)
        session.add(org)
        session.flush()
    return org


def create_key(session: Session, org: Organization, name: str, *, admin: bool = False) -> tuple[ApiKey, str]:
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), organization_id=org.id, name=name, key_hash=hash_key(plaintext), is_admin=admin)
    session.add(key)
    session.flush()
    return key, plaintext


def authenticate(session: Session, plaintext: str) -> Principal | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))
    if key is None or key.revoked_at is not None:
        return None
    return Principal(organization_id=key.organization_id, key_id=key.id, is_admin=key.is_admin)


def list_keys(session: Session) -> list[tuple[ApiKey, Organization]]:
    rows = session.execute(
        select(ApiKey, Organization)
        .join(Organization, Organization.id == ApiKey.organization_id)
        .order_by(ApiKey.created_at)
    )
    return [(k, o) for k, o in rows.tuples()]


def revoke_key(session: Session, key_id: str) -> bool:
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    session.flush()
    return True

"""Organizations and API keys. Keys are random, shown once, and stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tuneforge.app.auth import repository
from tuneforge.app.auth.cache import principals
from tuneforge.app.core.ids import new_id
from tuneforge.app.db.models import ApiKey, Organization

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
    org = repository.org_by_name(session, name)
    return org if org is not None else repository.add_org(session, Organization(id=new_id("org"), name=name))


def create_key(session: Session, org: Organization, name: str, *, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key for `org`. Returns the row and the plaintext, which is never stored."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), organization_id=org.id, name=name, key_hash=hash_key(plaintext), is_admin=admin)
    return repository.add_key(session, key), plaintext


def authenticate(session: Session, plaintext: str) -> Principal | None:
    key = repository.key_by_hash(session, hash_key(plaintext))
    if key is None or key.revoked_at is not None:
        return None
    return Principal(organization_id=key.organization_id, key_id=key.id, is_admin=key.is_admin)


def list_keys(session: Session) -> list[tuple[ApiKey, Organization]]:
    return repository.keys_with_orgs(session)


def revoke_key(session: Session, key_id: str) -> bool:
    principals.forget_key(key_id)
    return repository.revoke(session, key_id)


def cached_principal(plaintext: str) -> Principal | None:
    """The principal of a key this process authenticated recently, without a query (or None)."""
    return principals.get(hash_key(plaintext))


def authenticate_cached(session_factory: Callable[[], Session], plaintext: str, ttl: float) -> Principal | None:
    """`authenticate` behind the per-process cache (tuneforge/app/auth/cache.py). Opens a session only on a miss."""
    key_hash = hash_key(plaintext)
    principal = principals.get(key_hash)
    if principal is None:
        with session_factory() as session:
            principal = authenticate(session, plaintext)
        if principal is not None:
            principals.put(key_hash, principal, ttl)
    return principal

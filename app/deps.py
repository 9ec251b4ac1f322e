"""Request-scoped dependencies: a database session and the calling organization."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.auth.service import Principal, authenticate
from app.core.config import Settings, get_settings
from app.core.errors import Unauthorized, Unavailable
from app.db.engine import get_sessionmaker


def get_session() -> Iterator[Session]:
    """Routes that change state call `session.commit()` themselves, before they return, so that a
    client never sees an id that is not yet committed; anything uncommitted is rolled back here."""
    session = get_sessionmaker()()
    try:
        yield session
    except OperationalError as exc:
        raise Unavailable("The database is unavailable; retry shortly.", code="database_unavailable") from exc
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_principal(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key. Send `Authorization: Bearer <key>`.", code="missing_api_key")
    principal = authenticate(session, token.strip())
    if principal is None:
        raise Unauthorized("Invalid or revoked API key.", code="invalid_api_key")
    request.state.key_id = principal.key_id
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

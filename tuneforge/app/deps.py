"""Request-scoped dependencies: a database session and the calling organization."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tuneforge.app.auth.service import Principal, authenticate_cached, cached_principal
from tuneforge.app.core.config import Settings, get_settings
from tuneforge.app.core.errors import Unauthorized, Unavailable
from tuneforge.app.db.engine import get_sessionmaker


async def get_session() -> AsyncIterator[Session]:
    """Routes that change state call `session.commit()` themselves, before they return, so that a
    client never sees an id that is not yet committed; anything uncommitted is rolled back here.

    Async, so it costs no threadpool hop: making a Session does no I/O (it connects on first use),
    and closing one that holds a connection (a rollback, a round trip) goes to the threadpool."""
    session = get_sessionmaker()()
    try:
        yield session
    except OperationalError as exc:
        raise Unavailable("The database is unavailable; retry shortly.", code="database_unavailable") from exc
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def current_settings() -> Settings:
    return get_settings()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(current_settings)]


async def get_principal(request: Request, settings: SettingsDep) -> Principal:
    """The calling key's organization. A key seen in the last TUNEFORGE_AUTH_CACHE_SECONDS costs no
    query and no threadpool hop (tuneforge/app/auth/cache.py); the lookup otherwise uses a session of its own."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key. Send `Authorization: Bearer <key>`.", code="missing_api_key")
    principal = cached_principal(token.strip())
    if principal is None:
        try:
            principal = await run_in_threadpool(
                authenticate_cached, get_sessionmaker(), token.strip(), settings.auth_cache_seconds
            )
        except OperationalError as exc:
            raise Unavailable("The database is unavailable; retry shortly.", code="database_unavailable") from exc
    if principal is None:
        raise Unauthorized("Invalid or revoked API key.", code="invalid_api_key")
    request.state.key_id = principal.key_id
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

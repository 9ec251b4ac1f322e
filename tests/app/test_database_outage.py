"""With the database unreachable the API answers 503 with a clear body, and /readyz says why."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=1"


def test_requests_get_503_while_the_database_is_down(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    import tuneforge.app.deps
    import tuneforge.app.health.service
    from tuneforge.app.auth.cache import principals

    dead = sessionmaker(create_engine(UNREACHABLE))
    monkeypatch.setattr(tuneforge.app.deps, "get_sessionmaker", lambda: dead)
    monkeypatch.setattr(tuneforge.app.health.service, "get_sessionmaker", lambda: dead)
    principals.clear()  # a key this process checked recently would not need the database

    r = client.get("/v1/fine_tuning/jobs")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "database_unavailable"
    ready = client.get("/readyz")  # its key cannot be checked either: not ready
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "database_unavailable"
    assert client.get("/healthz").status_code == 200

    monkeypatch.undo()  # the database is back: the same app recovers by itself
    assert client.get("/v1/fine_tuning/jobs").status_code == 200
    assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok"}

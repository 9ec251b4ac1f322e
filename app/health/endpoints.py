from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select, text

from app.db.engine import get_sessionmaker
from app.db.models import Job
from app.deps import SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _database_ok() -> str | None:
    try:
        with get_sessionmaker()() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return type(exc).__name__


def _broker_ok(url: str) -> str | None:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return type(exc).__name__


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    """Readiness: the database and the broker are reachable."""
    assert settings.broker_url is not None
    checks = {"database": _database_ok(), "broker": _broker_ok(settings.broker_url)}
    ready = all(v is None for v in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {k: "ok" if v is None else f"error: {v}" for k, v in checks.items()},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus() -> str:
    """Prometheus text format: jobs by status."""
    lines = ["# HELP tuneforge_jobs Jobs by status.", "# TYPE tuneforge_jobs gauge"]
    with get_sessionmaker()() as session:
        rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    for status, count in sorted(rows):
        lines.append(f'tuneforge_jobs{{status="{status}"}} {count}')
    return "\n".join(lines) + "\n"

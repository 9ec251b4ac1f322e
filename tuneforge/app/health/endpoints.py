from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from tuneforge.app.core.errors import PermissionDenied
from tuneforge.app.core.schemas import error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.health import service
from tuneforge.app.ops import service as ops

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses())
def readyz(settings: SettingsDep, _: PrincipalDep) -> JSONResponse:
    """Readiness: the database and the broker are reachable. Needs a key, like everything but
    /healthz (a probe sends one; with the database down, authentication itself answers 503)."""
    checks = {"database": service.database_problem(), "broker": service.broker_problem(settings.broker_url)}
    ready = all(v is None for v in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {k: "ok" if v is None else f"error: {v}" for k, v in checks.items()},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    # Documented by hand so that 200 is text/plain while errors stay in the JSON envelope.
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."},
        **error_responses(403),
    },
)
def prometheus(principal: PrincipalDep, session: SessionDep) -> Response:
    """Prometheus text format over every organization, so it needs an admin key (Prometheus sends it
    with `authorization: {credentials: ...}`). The series are listed in docs/operations.md."""
    if not principal.is_admin:
        raise PermissionDenied("/metrics covers every organization and needs an admin key.", code="admin_required")
    return Response(ops.render(session), media_type=ops.CONTENT_TYPE)

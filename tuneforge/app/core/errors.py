"""Errors in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.

Every failure a client can cause maps to a 4xx here; anything else becomes a 500 whose body carries
a request id and never a stack trace or a server path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from tuneforge.app.core.logging import new_request_id, request_id_var
from tuneforge.contract.spec import OPTIMIZER_NAMES, SpecError

log = logging.getLogger("tuneforge.api")


class APIError(Exception):
    status_code = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


class InvalidRequest(APIError):
    pass


class Unauthorized(APIError):
    status_code = 401
    type = "authentication_error"


class NotFound(APIError):
    status_code = 404


class Conflict(APIError):
    """A permanent conflict. `x-should-retry: false` stops the OpenAI SDK from retrying it."""

    status_code = 409

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("x-should-retry", "false")


class PermissionDenied(APIError):
    status_code = 403
    type = "permission_error"


class TooManyRequests(APIError):
    """A per-organization limit. `Retry-After` says when to try again; the SDK honours it."""

    status_code = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers["Retry-After"] = str(retry_after)


class PayloadTooLarge(APIError):
    status_code = 413


class Unavailable(APIError):
    status_code = 503
    type = "server_error"


def envelope(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _param_of(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    # A discriminated union puts the tag in the location (optimizer.sgd.momentum); users wrote
    # optimizer.momentum, so that is the name to give back.
    loc = [p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "optimizer" and p in OPTIMIZER_NAMES)]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, SpecError):
        loc.append(ctx_error.param)
    return ".".join(loc)


def _message_of(err: Mapping[str, Any]) -> str:
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, SpecError):
        return ctx_error.message
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "missing":
        return "field required"
    return str(err.get("msg", "invalid value"))


def describe_validation(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """(message, param) for pydantic errors: every problem listed, the first one's field named."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    parts = [f"{_param_of(e) or 'body'}: {_message_of(e)}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "Invalid request: " + "; ".join(parts) + more, _param_of(first) or None


def validation_error_response(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    message, param = describe_validation(errors)
    return JSONResponse(status_code=400, content=envelope(message, "invalid_request_error", param, "invalid_spec"))


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    patterns: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "method_patterns", None)
    if patterns is None:
        patterns = [(compile_path(p)[0], [m.upper() for m in ops]) for p, ops in app.openapi()["paths"].items()]
        app.state.method_patterns = patterns
    return sorted({m for regex, methods in patterns if regex.match(path) for m in methods})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content=envelope(exc.message, exc.type, exc.param, exc.code),
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette lists only the first matching route's methods; GET and POST on one path
            # are two routes here, and a client deserves both.
            headers["Allow"] = ", ".join(_allowed_methods(app, request.url.path)) or headers.get("Allow", "")
        return JSONResponse(
            status_code=exc.status_code,
            content=envelope(str(exc.detail), type_, None, None),
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Runs in Starlette's outermost middleware, after the request-id middleware has returned,
        # so the id is put back for the log line and the header here.
        request_id = getattr(request.state, "request_id", None) or new_request_id()
        token = request_id_var.set(request_id)
        try:
            log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        finally:
            request_id_var.reset(token)
        return JSONResponse(
            status_code=500,
            content=envelope(f"Internal server error (request id {request_id}).", "server_error", None, "internal"),
            headers={"x-request-id": request_id},
        )


class GatewayTimeout(APIError):
    """A request that a worker did not finish in time (an inference request's deadline)."""

    status_code = 504
    type = "timeout"


class UpstreamError(APIError):
    """An error a worker reported for a request, with the status it chose."""

    def __init__(self, status_code: int, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status_code = status_code
        if status_code >= 500:
            self.type = "server_error"

"""Errors in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.

Every failure a client can cause maps to a 4xx here; anything else becomes a 500 whose body carries
a request id and never a stack trace or a server path.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.jobs.spec import SpecError

log = logging.getLogger("tuneforge.api")

OPTIMIZER_TAGS = {
    "sgd", "adagrad", "rmsprop", "adam", "adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"
}  # fmt: skip


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


class PayloadTooLarge(APIError):
    status_code = 413


class Unavailable(APIError):
    status_code = 503
    type = "server_error"


def envelope(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _param_of(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    # A discriminated union puts the tag in the location (optimizer.sgd.momentum); users wrote
    # optimizer.momentum, so that is the name to give back.
    loc = [p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "optimizer" and p in OPTIMIZER_TAGS)]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, SpecError):
        loc.append(ctx_error.param)
    return ".".join(loc)


def _message_of(err: dict[str, Any]) -> str:
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, SpecError):
        return ctx_error.message
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "missing":
        return "field required"
    return str(err.get("msg", "invalid value"))


def validation_error_response(errors: list[dict[str, Any]]) -> JSONResponse:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _param_of(first) or None
    parts = [f"{_param_of(e) or 'body'}: {_message_of(e)}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    message = "Invalid request: " + "; ".join(parts) + more
    return JSONResponse(status_code=400, content=envelope(message, "invalid_request_error", param, "invalid_spec"))


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
        return JSONResponse(
            status_code=exc.status_code,
            content=envelope(str(exc.detail), type_, None, None),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        log.exception("unhandled error (request_id=%s)", request_id)
        return JSONResponse(
            status_code=500,
            content=envelope(f"Internal server error (request id {request_id}).", "server_error", None, "internal"),
        )

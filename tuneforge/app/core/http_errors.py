"""The API's exception handlers: domain errors, validation errors, Starlette's HTTP errors and anything
unexpected, each answered in OpenAI's error envelope. The only module of `core` that imports FastAPI
for errors, so that the worker, which raises and catches the same domain errors, never loads it.
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

from tuneforge.app.core.errors import APIError, describe_validation, envelope
from tuneforge.app.core.logging import new_request_id, request_id_var

log = logging.getLogger("tuneforge.api")


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

"""Log lines carry the request id (API) or the job id (worker), and never a secret.

The id lives in a context variable set by `RequestIdMiddleware` for the whole of a request (route,
dependencies, error handlers and uvicorn's access line alike), and by the worker for the whole of a
job. A filter on the handlers copies it onto every record, so the format can name `%(request_id)s`.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the worker logs through this module too, and never loads a web framework
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("tuneforge.access")
request_id_var: ContextVar[str] = ContextVar("tuneforge_request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# A client may send its own X-Request-ID to correlate logs; anything outside this charset (newlines
# that could forge log lines, quotes, very long values) is replaced by a fresh id.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Credentials that could otherwise reach a log line inside a URL or an Authorization header.
_SECRETS = (
    (re.compile(r"(://[^:/@\s]*:)[^@\s]+@"), r"\1***@"),
    (re.compile(r"(?i)(bearer\s+)\S+"), r"\1***"),
    (re.compile(r"\btf-[A-Za-z0-9_-]{20,}"), "tf-***"),
)


def redact(text: str) -> str:
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


class ContextFilter(logging.Filter):
    """Adds `request_id` to every record and masks credentials in the rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.msg, record.args = redact(record.getMessage()), None
        return True


def configure_logging(level: str = "INFO") -> None:
    """Root handler with the request-id format. uvicorn's and Celery's loggers propagate to it."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(ContextFilter())
    root.addHandler(handler)


def new_request_id() -> str:
    return f"req_{secrets.token_hex(8)}"


class RequestIdMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so the context variable is set in the task that runs the
    route and uvicorn's access log, and streaming responses are not buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = sent if _CLIENT_ID.match(sent) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)

        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The access line names the key by id (set by authentication), never by value.
            key_id = scope["state"].get("key_id", "-")
            ms = (time.perf_counter() - started) * 1000
            access_log.info("%s %s -> %s key=%s %.1fms", scope["method"], scope["path"], status, key_id, ms)
            request_id_var.reset(token)

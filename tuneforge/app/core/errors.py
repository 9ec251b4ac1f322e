"""Domain errors in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.

Every failure a client can cause is one of these exceptions, with the status it maps to. They are
plain exceptions: services and the worker raise and catch them without loading a web framework.
`tuneforge.app.core.http_errors` turns them (and everything else) into responses for the API, where
anything unexpected becomes a 500 whose body carries a request id and never a stack trace or a path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from tuneforge.contract.spec import OPTIMIZER_NAMES, SpecError


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


# The step pydantic adds to a location for each member of a union it tried (`prompt.str`,
# `prompt.list[str].0`, `content.function-after[...]`): a type, not a field the client wrote. No JSON
# type is `bytes`, and it is a field's name (`POST /v1/uploads` takes `bytes`), so it is not one of them.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|dict|list|[\w-]+\[.*\])$", re.DOTALL)


def _param_of(err: Mapping[str, Any]) -> str:
    if err.get("type") == "json_invalid":
        return ""  # no field: the body itself (its location is a character offset, not a name)
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    loc = [p for p in loc if not _UNION_MEMBER.match(p)]
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
    if err.get("type") == "json_invalid":
        position = [p for p in err.get("loc", ()) if isinstance(p, int)]
        where = f" at character {position[0]}" if position else ""
        return f"the body is not valid JSON ({(err.get('ctx') or {}).get('error', 'decode error')}{where})"
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

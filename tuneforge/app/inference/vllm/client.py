"""The one HTTP client to vLLM, and what its failures mean to a Tuneforge client.

vLLM down, restarting or still loading is a 503 with `Retry-After` (TUNEFORGE_VLLM_RETRY_AFTER_SECONDS),
never a 500: the openai SDK retries it by itself. vLLM's own 4xx (a JSON schema it cannot compile, a
tool-call parser it lacks) come back in OpenAI's envelope with vLLM's message."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import GatewayTimeout, Unavailable, UpstreamError

# Per event loop: httpx's connection pool belongs to the loop that opened it (the API has one; the
# in-process test client opens one per client).
_clients: dict[tuple[int, str], httpx.AsyncClient] = {}


def client(settings: Settings) -> httpx.AsyncClient:
    key = (id(asyncio.get_running_loop()), settings.vllm_url)
    found = _clients.get(key)
    if found is None or found.is_closed:
        headers = {"Authorization": f"Bearer {settings.vllm_api_key}"} if settings.vllm_api_key else {}
        found = httpx.AsyncClient(
            base_url=settings.vllm_url.rstrip("/"),
            headers=headers,
            # A generation may take up to the request's whole deadline; connecting must be quick.
            timeout=httpx.Timeout(settings.inference_timeout_seconds, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        _clients[key] = found
    return found


def unavailable(settings: Settings, why: str) -> Unavailable:
    return Unavailable(
        f"The inference server is unavailable ({why}); retry shortly.",
        code="inference_unavailable",
        headers={"Retry-After": str(settings.vllm_retry_after_seconds)},
    )


def timeout(settings: Settings) -> GatewayTimeout:
    return GatewayTimeout(
        f"The request did not finish within {settings.inference_timeout_seconds:g}s "
        "(TUNEFORGE_INFERENCE_TIMEOUT_SECONDS); retry with a smaller max_tokens or later.",
        code="timeout",
    )


def transport_error(settings: Settings, exc: httpx.HTTPError) -> Unavailable | GatewayTimeout:
    """A failure to talk to vLLM at all (refused, reset, timed out)."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return timeout(settings)
    return unavailable(settings, type(exc).__name__)


def error_of(status: int, body: bytes, settings: Settings) -> UpstreamError | Unavailable:
    """vLLM's error answer, in OpenAI's envelope. vLLM has written both `{"error": {...}}` and the older
    flat `{"object": "error", "message", ...}`; a 5xx (an engine that died) is a 503 to retry."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = {}
    err = data.get("error", data) if isinstance(data, dict) else {}
    if not isinstance(err, dict):
        err = {"message": str(err)}
    message = str(err.get("message") or body[:500].decode(errors="replace") or f"HTTP {status}")
    if status >= 500:
        return unavailable(settings, f"vLLM answered {status}: {message[:200]}")
    param = err.get("param")
    code = err.get("code")
    return UpstreamError(
        status, message, param=str(param) if param else None, code=str(code) if isinstance(code, str) else None
    )


def is_missing_model(status: int, body: bytes) -> bool:
    """vLLM's answer for a model name it does not serve (an adapter it lost in a restart)."""
    return status == 404 and b"does not exist" in body

"""A cap on the body of chat/completion requests, enforced while the body arrives.

The route class reads the body itself before FastAPI parses it: a declared `Content-Length` over
the cap is refused before a byte of the body is read, and a chunked body as soon as it passes the
cap, so an oversized request never sits whole in the API's memory. (FastAPI's own reader turns any
error raised while it reads into a 400, hence reading here first and handing the route a replay.)
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Message

from tuneforge.app.core.config import get_settings
from tuneforge.app.core.errors import PayloadTooLarge


def _too_large(cap: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than {cap} bytes, the most this server accepts for chat and completions "
        "(TUNEFORGE_MAX_INFERENCE_BODY_MB). Shorten the prompt.",
        code="request_too_large",
    )


class CappedBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def capped(request: Request) -> Response:
            cap = int(get_settings().max_inference_body_mb * 1024 * 1024)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _too_large(cap)
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise _too_large(cap)
                chunks.append(chunk)
            body = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await request.receive()  # after the body: only a disconnect can come

            return await handler(Request(request.scope, replay))

        return capped

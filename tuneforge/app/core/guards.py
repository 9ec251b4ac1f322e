"""Request guards that apply before routing, to every route alike."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from tuneforge.app.core.errors import envelope


class RejectNulMiddleware:
    """A NUL character in the path or the query string can never name a stored object (PostgreSQL
    text cannot hold one), so it is a 400 here rather than a database error later."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                body = json.dumps(
                    envelope("The URL contains a NUL character.", "invalid_request_error", None, "invalid_url")
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

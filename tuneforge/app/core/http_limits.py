"""Bounds on a request's head (request line and headers) in the HTTP server itself.

An anonymous client reaches the server before any route, key check or middleware runs: ASGI code only
sees a request once its headers are complete. uvicorn's httptools protocol (the one `uvicorn[standard]`
runs) buffers a header of any size, accepts any number of headers, and waits for the rest of a head
forever: its keep-alive timeout only runs between requests and restarts with every byte. So a 200 MB
`Authorization` header grew the API by 800 MB, and 50 connections trickling headers stayed open.

This protocol subclass counts the head's bytes and lines as they arrive, before the parser buffers
them, and times the head from its first byte (or from the connection's opening):

- more than TUNEFORGE_MAX_HEADER_BYTES bytes, or more than TUNEFORGE_MAX_HEADERS header lines, is a
  431 and the connection closes;
- a head not complete within TUNEFORGE_HEADER_TIMEOUT_SECONDS is a 408 (or, with nothing sent at
  all, a silent close).

Bodies are not timed here (uploads may be slow); routes cap their size. On a kept-alive connection
the next head is counted from the first byte after the previous request's body; bytes of a pipelined
next request that arrived in the same read as the previous body are not counted (one read, 64 KiB).
`tuneforge api` and `tuneforge up` both serve with it (server_options()).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tuneforge.app.core.config import get_settings
from tuneforge.app.core.errors import envelope

PROTOCOL = "tuneforge.app.core.http_limits:HeadLimitedHttpToolsProtocol"
END_OF_HEAD = b"\r\n\r\n"
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def server_options() -> dict[str, Any]:
    """What `uvicorn.run` needs to serve with these limits (the settings are read per connection)."""
    return {"http": PROTOCOL}


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_head_bytes = settings.max_header_bytes
        self.max_head_lines = settings.max_headers + 2  # the request line and the empty line end it
        self.head_timeout = settings.header_timeout_seconds
        self._in_head = True
        self._head_bytes = 0
        self._head_lines = 0
        self._tail = b""  # the last bytes of the head so far: its end may straddle two reads
        self._head_timer: asyncio.TimerHandle | None = None

    # -- the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._head_timer is None:
                self._arm()
            if not self._count_head(data):
                return
        super().data_received(data)

    # The parser says exactly where a head ends and a message ends, also for a request whose head
    # arrived in the same read as the previous request's body (then it was not counted here).

    def on_headers_complete(self) -> None:
        self._in_head, self._tail = False, b""
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next bytes on this connection start the next request's head.
        self._in_head, self._head_bytes, self._head_lines, self._tail = True, 0, 0, b""

    # -- the head

    def _count_head(self, data: bytes) -> bool:
        """Count what of `data` belongs to the head; False when the request was refused."""
        window = self._tail + data
        end = window.find(END_OF_HEAD)
        part = data if end < 0 else data[: max(end + len(END_OF_HEAD) - len(self._tail), 0)]
        self._head_bytes += len(part)
        self._head_lines += part.count(b"\n")
        if self._head_bytes > self.max_head_bytes or self._head_lines > self.max_head_lines:
            limit = (
                f"{self.max_head_bytes} bytes (TUNEFORGE_MAX_HEADER_BYTES)"
                if self._head_bytes > self.max_head_bytes
                else f"{self.max_head_lines - 2} header fields (TUNEFORGE_MAX_HEADERS)"
            )
            self._refuse(431, f"The request's headers exceed {limit}.", "headers_too_large")
            return False
        if end >= 0:
            self._in_head, self._tail = False, b""
            self._disarm()
        else:
            self._tail = window[-(len(END_OF_HEAD) - 1) :]
        return True

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing was asked: nothing to answer
            return
        self._refuse(
            408,
            f"The request's headers did not arrive within {self.head_timeout:g}s (TUNEFORGE_HEADER_TIMEOUT_SECONDS).",
            "header_timeout",
        )

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer and close, unless a response of an earlier request is still being sent on this
        connection (then closing is all that can be done without corrupting it)."""
        self._in_head = False
        self._disarm()
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps(envelope(message, "invalid_request_error", None, code)).encode()
            head = (
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                % (status, REASONS[status], len(body))
            )
            self.transport.write(head + body)
        self.transport.close()

"""The API's end of a reply channel (tuneforge/app/inference/replies.py), awaited on the event loop.

A chat request waits seconds to minutes for its worker. Waiting in a thread of the API's pool (as a
blocking BLPOP or a sleeping poll would) lets a few dozen chats of one tenant take every thread, and
every other request queues behind them. Here a wait is an `await`: redis.asyncio's BLPOP for the
Redis channel, an `asyncio.sleep` between reads of the file for the embedded default. Same keys and
files as the worker writes; the worker's side stays synchronous.

A worker pushes one event per token. A reader takes every event already waiting in one round trip
(LPOP with a count; all complete lines of the file) and hands them out one by one; after a wait
ends, it lingers LINGER_SECONDS so that the tokens generated meanwhile come in the same batch. A
fast generation then costs the API a few round trips per 50 ms, not two per token (which, for a
tenant's eight chats in flight, was a steady share of the event loop that every other request felt).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from redis.asyncio import Redis

from tuneforge.app.core.async_redis import async_redis, is_redis_url
from tuneforge.app.core.config import Settings
from tuneforge.app.inference.replies import (
    BLPOP_SLICE_SECONDS,
    TTL_SECONDS,
    Event,
    FileReplies,
    cancel_key,
    reply_file,
    reply_key,
)


class ReplyReader(Protocol):
    async def pop(self, request_id: str, timeout: float) -> Event | None:
        """The next event, or None when none came within `timeout` seconds."""
        ...

    async def cancel(self, request_id: str) -> None:
        """Tell the worker to stop (the client went away, or the API answered 504)."""
        ...

    async def close(self, request_id: str) -> None:
        """Drop what is left of a finished request."""
        ...


DRAIN = 256  # events taken in one round trip, at most
LINGER_SECONDS = 0.05  # a client sees tokens at most this much later, in batches


class RedisReplyReader:
    def __init__(self, url: str) -> None:
        self._url = url
        self._pending: deque[Event] = deque()

    async def pop(self, request_id: str, timeout: float) -> Event | None:
        if self._pending:
            return self._pending.popleft()
        redis = async_redis(self._url)
        key = reply_key(request_id)
        if await self._take_waiting(redis, key):  # what the worker pushed since the last call
            return self._pending.popleft()
        deadline = time.monotonic() + timeout
        while True:
            # Slices shorter than any socket timeout; 0 would mean "forever", so at least a millisecond.
            wait = min(max(deadline - time.monotonic(), 0.001), BLPOP_SLICE_SECONDS)
            got = await redis.blpop([key], timeout=wait)
            if got is not None:
                event = dict(json.loads(got[1]))
                if event.get("type") == "delta":  # more are coming: take them together
                    await anyio.sleep(LINGER_SECONDS)
                    await self._take_waiting(redis, key)
                return event
            if time.monotonic() >= deadline:
                return None

    async def _take_waiting(self, redis: Redis, key: str) -> bool:
        """Every event already waiting, in one round trip (LPOP with a count: Redis >= 6.2)."""
        waiting: Any = await redis.lpop(key, DRAIN)
        if isinstance(waiting, list):
            self._pending.extend(dict(json.loads(raw)) for raw in waiting)
        return bool(self._pending)

    async def cancel(self, request_id: str) -> None:
        await async_redis(self._url).set(cancel_key(request_id), b"1", ex=TTL_SECONDS)

    async def close(self, request_id: str) -> None:
        await async_redis(self._url).delete(reply_key(request_id))


class FileReplyReader:
    """Tails `<data_dir>/replies/<id>.jsonl`. Reading one line of a local file takes microseconds, so
    it is read on the loop; only the wait between reads is awaited."""

    POLL_SECONDS = max(FileReplies.POLL_SECONDS, LINGER_SECONDS)
    SWEEP_EVERY_SECONDS = 60.0
    _last_sweep = 0.0

    def __init__(self, root: Path) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self._offset = 0
        self._pending: deque[Event] = deque()

    async def pop(self, request_id: str, timeout: float) -> Event | None:
        path = reply_file(self._root, request_id)
        deadline = time.monotonic() + timeout
        while not self._pending:
            with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read(1 << 20)
                complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
                self._offset += len(complete)
                self._pending.extend(dict(json.loads(line)) for line in complete.splitlines())
            if self._pending:
                break
            if time.monotonic() >= deadline:
                return None
            await anyio.sleep(self.POLL_SECONDS)
        return self._pending.popleft()

    async def cancel(self, request_id: str) -> None:
        reply_file(self._root, request_id, ".cancel").touch()

    async def close(self, request_id: str) -> None:
        reply_file(self._root, request_id).unlink(missing_ok=True)
        # The cancel mark stays until a sweep: a worker that has not started yet must see it. A sweep
        # lists the whole directory, so it runs in a thread, at most once a minute per process.
        now = time.monotonic()
        if now - FileReplyReader._last_sweep >= self.SWEEP_EVERY_SECONDS:
            FileReplyReader._last_sweep = now
            await anyio.to_thread.run_sync(FileReplies(self._root).sweep)


def reply_reader(settings: Settings) -> ReplyReader:
    """One reader per request (the file reader keeps that request's offset)."""
    if is_redis_url(settings.broker_url):
        return RedisReplyReader(settings.broker_url)
    return FileReplyReader(settings.data_dir / "replies")

"""How an inference worker's tokens get back to the API process that holds the HTTP request.

One reply channel per request, named by its request id, written only by the worker that took the
message and read only by the API process that published it (docs/serving.md):

- **Redis** (the deployed broker): a Redis list per request. The worker `RPUSH`es events, the API
  `BLPOP`s them, so a token reaches the client as soon as it is pushed. Keys expire on their own,
  so a request whose API process died leaves nothing behind.
- **Files** (the embedded default, SQLite + kombu's SQLAlchemy transport, no Redis): `tuneforge up`
  runs the API and the inference worker on one box, sharing the data dir. The worker appends JSON
  lines to `<data_dir>/replies/<id>.jsonl` and the API tails the file.

The API reads a channel through tuneforge/app/inference/reply_reader.py, which awaits each event on the
event loop (redis.asyncio, or an async poll of the file) and never holds a thread while a worker
generates; the synchronous `pop` here is for scripts and tests.

Events are small dicts: `start` (prompt accepted, with `prompt_tokens`), `delta` (text), `done`
(`finish_reason`, `usage`) or `error` (`status`, `message`, `param`, `code`). Either side may mark
a request cancelled (the client went away, or the API answered 504); the worker stops generating.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from tuneforge.app.core.config import Settings

Event = dict[str, Any]
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
TTL_SECONDS = 600
BLPOP_SLICE_SECONDS = 2.0


def reply_key(request_id: str) -> str:
    return f"tuneforge:reply:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"tuneforge:cancel:{request_id}"


def reply_file(root: Path, request_id: str, suffix: str = ".jsonl") -> Path:
    if not REQUEST_ID.match(request_id):
        raise ValueError("invalid request id")
    return root / f"{request_id}{suffix}"


class ReplyChannel(Protocol):
    def push(self, request_id: str, event: Event) -> None: ...

    def pop(self, request_id: str, timeout: float) -> Event | None:
        """The next event, or None when none came within `timeout` seconds."""
        ...

    def cancel(self, request_id: str) -> None: ...

    def cancelled(self, request_id: str) -> bool: ...

    def close(self, request_id: str) -> None:
        """Drop what is left of a finished request (the reader calls it)."""
        ...


@lru_cache(maxsize=4)
def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


class RedisReplies:
    def __init__(self, url: str) -> None:
        self._redis = _redis_client(url)

    def push(self, request_id: str, event: Event) -> None:
        key = reply_key(request_id)
        pipe = self._redis.pipeline()
        pipe.rpush(key, json.dumps(event))
        pipe.expire(key, TTL_SECONDS)
        pipe.execute()

    def pop(self, request_id: str, timeout: float) -> Event | None:
        # Waits in slices shorter than the client's socket timeout (redis-py's default is 5 s).
        # BLPOP takes a float timeout; 0 would mean "forever", so each wait is at least a millisecond.
        deadline = time.monotonic() + timeout
        while True:
            wait = min(max(deadline - time.monotonic(), 0.001), BLPOP_SLICE_SECONDS)
            got = self._redis.blpop([reply_key(request_id)], timeout=wait)
            if got is not None:
                return dict(json.loads(got[1]))
            if time.monotonic() >= deadline:
                return None

    def cancel(self, request_id: str) -> None:
        self._redis.set(cancel_key(request_id), b"1", ex=TTL_SECONDS)

    def cancelled(self, request_id: str) -> bool:
        return bool(self._redis.exists(cancel_key(request_id)))

    def close(self, request_id: str) -> None:
        self._redis.delete(reply_key(request_id))


class FileReplies:
    """Append-only JSON lines; the reader keeps its offset per request and reads whole lines only."""

    POLL_SECONDS = 0.02

    def __init__(self, root: Path) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self._offsets: dict[str, int] = {}

    def _path(self, request_id: str, suffix: str = ".jsonl") -> Path:
        return reply_file(self._root, request_id, suffix)

    def push(self, request_id: str, event: Event) -> None:
        with self._path(request_id).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")

    def pop(self, request_id: str, timeout: float) -> Event | None:
        path = self._path(request_id)
        deadline = time.monotonic() + timeout
        while True:
            offset = self._offsets.get(request_id, 0)
            with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
                fh.seek(offset)
                line = fh.readline()
                if line.endswith(b"\n"):
                    self._offsets[request_id] = offset + len(line)
                    return dict(json.loads(line))
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.POLL_SECONDS)

    def cancel(self, request_id: str) -> None:
        self._path(request_id, ".cancel").touch()

    def cancelled(self, request_id: str) -> bool:
        return self._path(request_id, ".cancel").exists()

    def close(self, request_id: str) -> None:
        self._offsets.pop(request_id, None)
        self._path(request_id).unlink(missing_ok=True)
        # The cancel mark stays until the sweep below: a worker that has not started yet must see it.
        self.sweep()

    def sweep(self) -> None:
        cutoff = time.time() - TTL_SECONDS
        for p in self._root.iterdir():
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()


def reply_channel(settings: Settings) -> ReplyChannel:
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisReplies(settings.broker_url)
    return FileReplies(settings.data_dir / "replies")

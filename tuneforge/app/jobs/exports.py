"""Model exports (`adapter?format=merged`, `gguf`, `gguf-lora`): built once per checkpoint however many
ask at once, a few at a time, and awaited without holding a server thread (docs/security.md).

A build loads the base model in a child process for seconds to minutes. Before this, each request
waited for it on a thread of the API's pool (8 simultaneous requests started 9 merges using 3.8 GB
and held 8 threads for up to 30 minutes), so a handful of downloads could stall every tenant.

- **Once per export**: requests for an export this process is already building await that build;
  across processes on one host, the builders' file lock (merged.py) makes the later one find the
  first one's folder.
- **A few at a time**: builds run on a pool of TUNEFORGE_MAX_CONCURRENT_EXPORTS threads of their own;
  more wait their turn there, not on the API's threads. The request awaits on the event loop.
- **A fair share**: an organization may have TUNEFORGE_MAX_EXPORTS_PER_ORG builds going at once
  (core/limits.py, across API processes on Redis); another is a 429 with Retry-After. Downloading an
  export that is already built, or waiting for one being built, takes no share.
- A build outlives the request that started it (a client that leaves does not waste the work).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from tuneforge.app.core.config import Settings
from tuneforge.app.core.limits import InFlightKind, hold

T = TypeVar("T")

_builds: dict[Hashable, asyncio.Future[Any]] = {}
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _builders(settings: Settings) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(settings.max_concurrent_exports, thread_name_prefix="tuneforge-export")
        return _pool


async def _build(settings: Settings, org_id: str, build: Callable[[], T]) -> T:
    async with hold(settings, org_id, InFlightKind.EXPORT):
        return await asyncio.get_running_loop().run_in_executor(_builders(settings), build)


async def prepared(settings: Settings, org_id: str, key: Hashable, *, ready: bool, build: Callable[[], T]) -> T:
    """`build()`'s result: at once in the API's thread pool when the export is `ready` (on disk:
    only its files are hashed), else from the one build of `key` in this process, started here if
    none is running. Raises what the build raises, or the 429 of the organization's share."""
    if ready:
        return await run_in_threadpool(build)
    running = _builds.get(key)
    if running is None:
        running = asyncio.ensure_future(_build(settings, org_id, build))
        _builds[key] = running
        running.add_done_callback(lambda done: _builds.pop(key, None) if _builds.get(key) is done else None)
    # Shielded: a client that leaves cancels its wait, not the build others (or a retry) will use.
    result: T = await asyncio.shield(running)
    return result


def building() -> int:
    """Exports this process is building or has queued (for tests and metrics)."""
    return len(_builds)

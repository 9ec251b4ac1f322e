"""`POST /v1/files` validates in a child process, not a thread of the API's.

Validation is pure-Python parsing: on a thread it holds the API process's GIL for most of its
seconds, and every other request of every tenant (on the event loop and the other threads) runs
slower meanwhile; a tenant keeping its four uploads in flight took another tenant's p99 from 35 ms to
400 ms (tests/app/test_fairness.py). In a child process it uses another core and leaves the API's
interpreter alone. Its processes run at a lower priority (nice 10): on a machine with fewer spare cores
than uploads, the kernel then gives the API's own process (the event loop every tenant waits on) the
core first, and validation the time it leaves. The pool is small and shared by the API process
(TUNEFORGE_MAX_UPLOADS_PER_ORG bounds one tenant's share of it); its processes are spawned on first use and reused.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

from tuneforge.app.files.parsing import FileReport, validate_file

PROCESSES = 2
NICENESS = 10

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # spawn: a fork of a process with threads (uvicorn's, the loops') may inherit held locks.
            _pool = ProcessPoolExecutor(
                PROCESSES,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_setup,
                initargs=(os.getpid(),),
            )
        return _pool


def _child_setup(parent: int) -> None:
    """In each validation process: a lower priority, and an exit when the API process is gone. A pool's
    processes share their task queue's pipe with each other, so they never see it close; without this,
    every API process that stops (SIGTERM, SIGKILL, a rolling restart) left its two idle, orphaned."""
    os.nice(NICENESS)
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1  # the signal comes when the thread that started this process ends
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it was gone before the line above
        os._exit(0)


def _discard(broken: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is broken:
            _pool = None


async def validate_in_child(path: Path, *, max_rows: int, max_line_bytes: int) -> FileReport:
    """`parsing.validate_file` in the pool; raises its DatasetError. A child killed meanwhile (the OOM
    killer) breaks the pool: the next call makes a new one, and this one is retried there once."""
    job = partial(validate_file, path, max_rows=max_rows, max_line_bytes=max_line_bytes)
    loop = asyncio.get_running_loop()
    pool = _executor()
    try:
        return await loop.run_in_executor(pool, job)
    except BrokenProcessPool:
        _discard(pool)
        return await loop.run_in_executor(_executor(), job)

"""One tracker's delivery: a bounded buffer the training thread appends to, and a thread that sends it.

The training thread never waits on a tracker: `metrics()` appends to a deque and returns. The sink's own thread
opens the run, sends the points in batches and, at the end, the summary. A tracker that is down is retried with
backoff (1 s doubling to TUNEFORGE_TRACKER_RETRY_MAX_SECONDS) while the buffer keeps the newest points (the oldest
are dropped past TUNEFORGE_TRACKER_BUFFER_POINTS, and counted). The job hears of an outage once, as a warning
event, and once more when the tracker is back; a refusal that retrying cannot fix (a missing library, a server
that rejects the data) is reported once and that part is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tuneforge.contract.status import EventLevel

log = logging.getLogger("tuneforge.worker")

BATCH = 500  # points per send: MLflow's log_batch takes 1,000 metrics, and a point carries a few


class Rejected(Exception):
    """The tracker refused something that retrying will not fix. `fatal`: the sink cannot go on at all."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class Backend(Protocol):
    """A tracker's client. Every method may raise: `Rejected` for what retrying cannot fix, anything else for
    an outage. Each is called again after an outage, so each must be safe to repeat."""

    kind: str  # "wandb", "mlflow": the event's data.integration
    title: str  # "W&B", "MLflow"
    where: str  # the server or folder, for the events

    def open(self) -> str:
        """Create (or, for a later attempt of the job, find) the run, and log the hyperparameters. Returns where
        the run is, for the job's events."""

    def log(self, points: list[tuple[int, dict[str, float]]]) -> None:
        """(step, {series: value}) pairs, in step order."""

    def finish(self, summary: dict[str, float], status: str) -> None:
        """The final metrics, and the run's end (`status`: the job's outcome, e.g. succeeded, failed, paused)."""

    def abandon(self) -> None:
        """Release what the client holds without waiting on the server (the sink was given up on)."""


Emit = Callable[[str, EventLevel, dict[str, Any]], None]


@dataclass
class _Final:
    summary: dict[str, float]
    status: str


class TrackerSink:
    def __init__(self, backend: Backend, emit: Emit, *, buffer: int, retry_max: float) -> None:
        self.backend = backend
        self._emit = emit
        self._buffer: deque[tuple[int, dict[str, float]]] = deque(maxlen=buffer)
        self._retry_max = retry_max
        self._cond = threading.Condition()
        self._final: _Final | None = None
        self._given_up = threading.Event()
        self.dropped = 0  # points pushed out of the full buffer
        self.sent = 0
        self.outages = 0
        self._thread = threading.Thread(target=self._run, name=f"tracker-{backend.kind}", daemon=True)

    # ---- the training thread's side: never blocks on the network

    def start(self) -> None:
        self._thread.start()

    def metrics(self, step: int, values: dict[str, float]) -> None:
        with self._cond:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append((step, values))
            self._cond.notify()

    def finish(self, summary: dict[str, float], status: str) -> None:
        """Send what is buffered, then the summary, and end the run. Returns at once."""
        with self._cond:
            self._final = _Final(summary, status)
            self._cond.notify()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the sink to deliver everything; past it, give up on it. True if delivered."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._given_up.set()
            with self._cond:
                self._cond.notify()
            log.warning(
                "%s at %s: gave up after %.0fs with %d points undelivered",
                self.backend.title, self.backend.where, timeout, len(self._buffer),
            )  # fmt: skip
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- the sink's thread

    def _run(self) -> None:
        try:
            self._deliver()
        except Exception:
            log.exception("%s sink stopped", self.backend.title)
        finally:
            if self._given_up.is_set():
                try:
                    self.backend.abandon()
                except Exception:
                    log.debug("abandoning %s failed", self.backend.title, exc_info=True)

    def _deliver(self) -> None:
        opened = False
        pending: list[tuple[int, dict[str, float]]] = []
        first_delay = min(1.0, self._retry_max)
        delay = first_delay
        down_since: float | None = None
        while not self._given_up.is_set():
            with self._cond:
                while not pending and not self._buffer and self._final is None and not self._given_up.is_set():
                    self._cond.wait(1.0)
                if not pending:
                    pending = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
                final = self._final if not pending and not self._buffer else None
            if self._given_up.is_set():
                return
            try:
                if not opened:
                    where = self.backend.open()
                    opened = True
                    self._report(where, "info")
                    if self._given_up.is_set():  # the open outlasted the job's drain: send nothing more
                        return
                if pending:
                    self.backend.log(pending)
                    self.sent += len(pending)
                    pending = []
                elif final is not None:
                    self.backend.finish(final.summary, final.status)
                    return
            except Rejected as exc:
                self._report(f"{self.backend.title} at {self.backend.where} refused the job's data: {exc}", "error")
                if exc.fatal:
                    return
                opened = True  # a refusal of the run's parameters or of a batch: drop it and go on
                pending = []
                continue
            except Exception as exc:  # noqa: BLE001 - any client error is an outage: retried, never raised
                if down_since is None:
                    down_since = time.monotonic()
                    self.outages += 1
                    self._report(
                        f"{self.backend.title} at {self.backend.where} is unreachable ({_describe(exc)}); the job goes "
                        "on and Tuneforge retries with backoff, keeping the newest metric points meanwhile",
                        "warn",
                    )
                self._given_up.wait(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            if down_since is not None:
                lost = f"; {self.dropped} points did not fit the buffer and were dropped" if self.dropped else ""
                self._report(
                    f"{self.backend.title} at {self.backend.where} is reachable again after "
                    f"{time.monotonic() - down_since:.0f}s{lost}",
                    "info",
                )
                down_since = None
            delay = first_delay

    def _report(self, message: str, level: EventLevel) -> None:
        data = {"integration": self.backend.kind, "target": self.backend.where}
        try:
            self._emit(message, level, data)
        except Exception:  # noqa: BLE001 - the event is a courtesy; the database may be down too
            log.warning("could not record the %s event: %s", self.backend.title, message)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:199] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

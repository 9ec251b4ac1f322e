"""The Reporter that writes to the database, and the heartbeat that keeps the job's lease.

Training calls `metrics()` and `progress()` every step; they only append to memory. A background
thread, every `metrics_flush_seconds`, writes the buffered points in one transaction, renews the
lease with the latest progress, and reads back whether the job was cancelled. So training pays no
database round trip per step (docs/reliability.md), and a cancel is seen within one tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tuneforge.app.core.config import Settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.jobs import repository
from tuneforge.contract.status import SAMPLES_EVENT, EventLevel, EventType, JobStatus, StopReason

log = logging.getLogger("tuneforge.worker")

# Set when the worker process is asked to stop (SIGTERM: a deploy, a scale-down). The running job
# checkpoints, hands itself back to the queue, and the process exits.
SHUTDOWN = threading.Event()


T = TypeVar("T")


def retry(what: str, fn: Callable[[], T], attempts: int = 6, first_delay: float = 0.5) -> T:
    """Database blips (a restart, a failover) are retried with backoff instead of failing the job."""
    delay = first_delay
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if i == attempts - 1:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable: the last attempt returns or raises")


class DBReporter:
    def __init__(
        self, job_id: str, worker_id: str, settings: Settings, *, store: Callable[[Path], str] | None = None
    ) -> None:
        self.job_id = job_id
        # Moves a saved checkpoint to the artifact store and returns its location there.
        self.store = store or str
        self.worker_id = worker_id
        self.settings = settings
        self._lock = threading.Lock()
        self._points: list[dict[str, Any]] = []
        self._progress: dict[str, Any] = {}
        self._stop_reason: StopReason | None = None
        self._stopping = threading.Event()
        self._last_renewal = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    # ---- Reporter protocol (called from the training thread)

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        type_: EventType = "metrics" if data and "eval_loss" in data else "message"

        def write() -> None:
            with session_scope() as s:
                repository.add_event(s, self.job_id, message, level=level, type_=type_, data=data)

        retry("writing an event", write)

    def metrics(self, point: dict[str, Any]) -> None:
        with self._lock:
            self._points.append(point)

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self._progress = {"step": step, "total_steps": total_steps, "epoch": epoch}

    @property
    def last_progress(self) -> dict[str, Any]:
        """The latest progress, for the final record: a job shorter than one heartbeat interval has
        never written it."""
        return dict(self._progress)

    def checkpoint(self, step: int, path: Path, manifest: dict[str, str], metrics: dict[str, Any]) -> None:
        self.flush()
        location = self.store(path)  # uploaded whole (manifest last) before the row says it exists

        def write() -> None:
            with session_scope() as s:
                repository.add_checkpoint(s, self.job_id, step, location, manifest, metrics)

        retry("recording a checkpoint", write)

    def samples(self, step: int, items: list[dict[str, Any]]) -> None:
        """Stores the step's generations and announces them with a message event (data.kind `samples`), in one
        transaction."""
        message = f"Sample generations at step {step}: {len(items)} prompt{'s' if len(items) != 1 else ''}"
        if items:
            message += f'; the first says "{_preview(items[0]["output"])}"'

        def write() -> None:
            with session_scope() as s:
                repository.replace_samples(s, self.job_id, step, items)
                repository.add_event(
                    s, self.job_id, message, data={"kind": SAMPLES_EVENT, "step": step, "count": len(items)}
                )

        retry("recording sample generations", write)

    def stop_requested(self) -> StopReason | None:
        if self._stop_reason is None and SHUTDOWN.is_set():
            return StopReason.SHUTDOWN
        return self._stop_reason

    # ---- heartbeat

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            points, self._points = self._points, []
        if not points:
            return

        def write() -> None:
            with session_scope() as s:
                repository.upsert_metrics(s, self.job_id, points)

        retry("writing metrics", write)

    def _beat(self) -> None:
        interval = min(self.settings.metrics_flush_seconds, self.settings.heartbeat_seconds)
        while not self._stopping.wait(interval):
            try:
                self.flush()
                with session_scope() as s:
                    status = repository.renew_lease(
                        s, self.job_id, self.worker_id, self.settings.lease_seconds, **self._progress
                    )
                self._last_renewal = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - the database may be restarting; keep training
                log.warning("heartbeat for %s failed: %s", self.job_id, type(exc).__name__)
                if time.monotonic() - self._last_renewal > self.settings.lease_seconds:
                    self._stop_reason = StopReason.LEASE_LOST
                continue
            if status is None:
                self._stop_reason = StopReason.LEASE_LOST
            elif status == JobStatus.CANCEL_REQUESTED:
                self._stop_reason = self._cancel_reason()
            elif status == JobStatus.PAUSE_REQUESTED:
                self._stop_reason = StopReason.PAUSED
            elif self._stop_reason == StopReason.PAUSED:  # the pause was withdrawn (resume)
                self._stop_reason = None

    def _cancel_reason(self) -> StopReason:
        """A sweep's pruner marks its trial `cancel_requested` with stop_reason `pruned`."""
        try:
            with session_scope() as s:
                reason = repository.stop_reason(s, self.job_id)
        except Exception:  # noqa: BLE001 - a cancel is a cancel; the reason is only recorded
            return StopReason.CANCELLED
        return StopReason.PRUNED if reason == StopReason.PRUNED else StopReason.CANCELLED


def _preview(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""Job integrations on the worker side: the trackers a job asked for (`spec.integrations`), fed from the metric
points the engine reports, each through its own background sink (sink.py).

The engine never knows: the runner hands `run()` a Reporter that is the worker's own (the database) with every
metric point also queued for each tracker, and tells the trackers how the job ended. Nothing here touches the
database or the broker; events go through the worker's Reporter.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tuneforge.app.core.config import Settings
from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import EventLevel, StopReason
from tuneforge.worker.tracking.mlflow_backend import MlflowBackend
from tuneforge.worker.tracking.sink import Backend, TrackerSink
from tuneforge.worker.tracking.values import flatten, series, summary
from tuneforge.worker.tracking.wandb_backend import WandbBackend
from tuneforge.worker.training.reporter import Reporter

__all__ = ["Trackers", "TrackingReporter", "drain"]

# Sinks still delivering, from this job or an earlier one in this process: `drain` waits on them.
_LIVE: list[TrackerSink] = []
_LIVE_LOCK = threading.Lock()


class TrackingReporter:
    """A Reporter that passes everything to `inner` and queues each metric point for the trackers too."""

    def __init__(self, inner: Reporter, sinks: list[TrackerSink]) -> None:
        self.inner = inner
        self.sinks = sinks

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        self.inner.event(message, level=level, data=data)

    def metrics(self, point: dict[str, Any]) -> None:
        self.inner.metrics(point)
        step, values = series(point)
        if values:
            for sink in self.sinks:
                sink.metrics(step, values)

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self.inner.progress(step, total_steps, epoch)

    def checkpoint(self, step: int, path: Path, manifest: dict[str, str], metrics: dict[str, Any]) -> None:
        self.inner.checkpoint(step, path, manifest, metrics)

    def samples(self, step: int, items: list[dict[str, Any]]) -> None:
        self.inner.samples(step, items)

    def stop_requested(self) -> StopReason | None:
        return self.inner.stop_requested()


class Trackers:
    """The trackers of one attempt of one job."""

    def __init__(self, reporter: Reporter, sinks: list[TrackerSink]) -> None:
        self.reporter: Reporter = TrackingReporter(reporter, sinks) if sinks else reporter
        self.sinks = sinks

    @classmethod
    def attach(cls, job_id: str, spec: JobSpec, model: str, settings: Settings, reporter: Reporter) -> Trackers:
        """Start a sink per integration of the job (none: the reporter is returned unchanged)."""
        if not spec.integrations:
            return cls(reporter, [])
        stored = spec.model_dump(mode="json", exclude={"integrations"})
        hyperparameters = {"model": model, "job_id": job_id, **stored}
        backends: list[Backend] = []
        for item in spec.integrations:
            if item.wandb is not None:
                backends.append(
                    WandbBackend(
                        item.wandb, job_id=job_id, model=model, config=hyperparameters, mode=settings.wandb_mode,
                        root=settings.wandb_root,
                    )
                )  # fmt: skip
            if item.mlflow is not None:
                backends.append(
                    MlflowBackend(
                        item.mlflow, job_id=job_id, model=model, params=flatten(hyperparameters),
                        allowed=settings.mlflow_tracking_uris,
                    )
                )  # fmt: skip

        def emit(message: str, level: EventLevel, data: dict[str, Any]) -> None:
            reporter.event(message, level=level, data=data)

        sinks = [
            TrackerSink(b, emit, buffer=settings.tracker_buffer_points, retry_max=settings.tracker_retry_max_seconds)
            for b in backends
        ]
        with _LIVE_LOCK:
            _LIVE[:] = [s for s in _LIVE if s.alive]
            _LIVE.extend(sinks)
        for sink in sinks:
            sink.start()
        return cls(reporter, sinks)

    def finish(self, outcome: str, final_metrics: dict[str, Any] | None) -> None:
        """How the attempt ended (a job status, or why it stopped: paused, shutdown...). Returns at once: the
        sinks deliver in the background, and `drain` waits for them."""
        values = summary(final_metrics)
        for sink in self.sinks:
            sink.finish(values, outcome)


def drain(timeout: float) -> None:
    """Wait up to `timeout` seconds in all for this process's sinks to deliver, then give up on the rest. Called
    after the job's outcome is recorded, so a tracker that is slow delays the worker's next job, never this one's
    result."""
    deadline = time.monotonic() + timeout
    with _LIVE_LOCK:
        live, _LIVE[:] = list(_LIVE), []
    for sink in live:
        sink.join(max(0.0, deadline - time.monotonic()))

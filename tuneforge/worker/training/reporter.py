"""How `run()` tells the outside world what it is doing, without knowing who listens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuneforge.contract.status import EventLevel, StopReason


class Reporter(Protocol):
    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None: ...

    def metrics(self, point: dict[str, Any]) -> None:
        """One step's metrics. Called every logging step; implementations should batch writes."""

    def progress(self, step: int, total_steps: int, epoch: float) -> None: ...

    def checkpoint(self, step: int, path: Path, manifest: dict[str, str], metrics: dict[str, Any]) -> None:
        """Called after a checkpoint directory is complete and renamed into place."""

    def samples(self, step: int, items: list[dict[str, Any]]) -> None:
        """Sample generations (`prompt`, `output`, `tokens`) made with the adapter as it is at `step`
        (0: the base model, before training)."""

    def stop_requested(self) -> StopReason | None:
        """A reason to stop, or None. Called every step: keep it cheap."""


@dataclass
class MemoryReporter:
    """Keeps everything in lists: for tests, benchmarks and the bare training script."""

    events: list[tuple[EventLevel, str, dict[str, Any] | None]] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)
    checkpoint_metrics: list[dict[str, Any]] = field(default_factory=list)
    samples_by_step: list[tuple[int, list[dict[str, Any]]]] = field(default_factory=list)
    stop_reason: StopReason | None = None
    stop_at_step: int | None = None
    last_step: int = 0

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        self.events.append((level, message, data))

    def metrics(self, point: dict[str, Any]) -> None:
        self.points.append(point)

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self.last_step = step

    def checkpoint(self, step: int, path: Path, manifest: dict[str, str], metrics: dict[str, Any]) -> None:
        self.checkpoints.append((step, path))
        self.checkpoint_metrics.append(metrics)

    def samples(self, step: int, items: list[dict[str, Any]]) -> None:
        self.samples_by_step.append((step, items))

    def stop_requested(self) -> StopReason | None:
        if self.stop_at_step is not None and self.last_step >= self.stop_at_step:
            return self.stop_reason or StopReason.CANCELLED
        return None

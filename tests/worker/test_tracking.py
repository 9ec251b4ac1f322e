"""The trackers' sink (tuneforge/worker/tracking/sink.py) with a tracker client that fails, stalls or refuses on
cue: the training side never waits, an outage is one event (and one more when it ends), nothing is lost within
the buffer, and a tracker that never answers is given up on. The real W&B and MLflow clients are driven in
tests/integration/test_integrations.py."""

from __future__ import annotations

import math
import threading
from typing import Any

from tuneforge.contract.status import EventLevel
from tuneforge.worker.tracking import TrackingReporter
from tuneforge.worker.tracking.sink import Rejected, TrackerSink
from tuneforge.worker.tracking.values import series, summary
from tuneforge.worker.training.reporter import MemoryReporter


class FakeTracker:
    """A tracker client: `down` calls fail with ConnectionError, `stall` blocks open() until released."""

    kind = "fake"
    title = "Fake"
    where = "http://tracker.test"

    def __init__(self, down: int = 0, stall: bool = False, refuse_first_log: bool = False) -> None:
        self.down = down
        self.stall = threading.Event() if stall else None
        self.refuse_first_log = refuse_first_log
        self.calls = 0
        self.points: list[tuple[int, dict[str, float]]] = []
        self.finished: tuple[dict[str, float], str] | None = None
        self.abandoned = threading.Event()

    def _call(self) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise ConnectionError("connection refused")

    def open(self) -> str:
        if self.stall is not None:
            self.stall.wait()
        self._call()
        return "Logging to Fake"

    def log(self, points: list[tuple[int, dict[str, float]]]) -> None:
        self._call()
        if self.refuse_first_log:
            self.refuse_first_log = False
            raise Rejected("bad metric name")
        self.points.extend(points)

    def finish(self, summary: dict[str, float], status: str) -> None:
        self._call()
        self.finished = (summary, status)

    def abandon(self) -> None:
        self.abandoned.set()


class Events(list[tuple[str, EventLevel, dict[str, Any]]]):
    """What the sink reported to the job: (message, level, data)."""


def _sink(tracker: FakeTracker, events: Events, buffer: int = 1000) -> TrackerSink:
    sink = TrackerSink(tracker, lambda m, lv, d: events.append((m, lv, d)), buffer=buffer, retry_max=0.01)
    sink.start()
    return sink


def test_an_outage_is_one_event_and_the_points_arrive_when_it_ends() -> None:
    tracker, events = FakeTracker(down=4), Events()
    sink = _sink(tracker, events)
    for step in range(1, 51):
        sink.metrics(step, {"loss": 1.0 / step})
    sink.finish({"final/train_loss": 0.02}, "succeeded")
    assert sink.join(30)
    assert [p[0] for p in tracker.points] == list(range(1, 51))  # every point, in order
    assert tracker.finished == ({"final/train_loss": 0.02}, "succeeded")
    warnings = [e for e in events if e[1] == "warn"]
    assert len(warnings) == 1, events  # four failed calls, one event
    assert "Fake at http://tracker.test is unreachable (ConnectionError: connection refused)" in warnings[0][0]
    assert warnings[0][2] == {"integration": "fake", "target": "http://tracker.test"}
    assert any("reachable again" in m for m, lv, _ in events if lv == "info")
    assert sink.outages == 1 and sink.sent == 50


def test_a_stalled_tracker_never_blocks_training_and_is_given_up_on() -> None:
    tracker, events = FakeTracker(stall=True), Events()
    sink = _sink(tracker, events, buffer=100)
    for step in range(20_000):  # the training thread only appends; the buffer keeps the newest 100
        sink.metrics(step, {"loss": 1.0})
    sink.finish({}, "succeeded")
    # Held: the buffer, and at most the one batch the sink took before the tracker stalled.
    assert 20_000 - 100 - 100 <= sink.dropped <= 20_000 - 100
    assert not sink.join(0.2)  # not delivered: given up
    assert tracker.stall is not None
    tracker.stall.set()  # the stuck call returns at last: the sink stops without sending, and lets go
    assert tracker.abandoned.wait(10)
    assert tracker.points == [] and tracker.finished is None


def test_a_refusal_is_reported_once_and_only_that_batch_is_dropped() -> None:
    tracker, events = FakeTracker(refuse_first_log=True), Events()
    sink = _sink(tracker, events)
    sink.metrics(1, {"loss": 1.0})
    assert _wait(lambda: any(lv == "error" for _, lv, _ in events))
    sink.metrics(2, {"loss": 0.5})
    sink.finish({}, "failed")
    assert sink.join(30)
    assert tracker.points == [(2, {"loss": 0.5})]
    assert tracker.finished == ({}, "failed")
    assert [m for m, lv, _ in events if lv == "error"] == [
        "Fake at http://tracker.test refused the job's data: bad metric name"
    ]


def test_the_reporter_feeds_the_trackers_and_the_worker_alike() -> None:
    inner, tracker, events = MemoryReporter(), FakeTracker(), Events()
    sink = _sink(tracker, events)
    reporter = TrackingReporter(inner, [sink])
    point = {"step": 3, "epoch": 0.5, "loss": 1.5, "learning_rate": 1e-3, "extra": {"train_mean_token_accuracy": 0.4}}
    reporter.metrics(point)
    reporter.event("hello")
    sink.finish({}, "succeeded")
    assert sink.join(30)
    assert inner.points == [point] and inner.events == [("info", "hello", None)]
    assert tracker.points == [(3, {"epoch": 0.5, "loss": 1.5, "learning_rate": 1e-3, "train_mean_token_accuracy": 0.4})]


def test_series_and_summary_keep_finite_numbers_under_the_api_names() -> None:
    step, values = series(
        {"step": 0, "epoch": 0.0, "eval_loss": 2.5, "extra": {"eval_loss": 2.5, "ok": True, "x": math.nan}}
    )
    assert (step, values) == (0, {"epoch": 0.0, "eval_loss": 2.5})
    final = {"train_loss": 1.0, "steps": 6, "validation": {"eval_loss": 2.0, "perplexity": math.inf}, "note": "x"}
    assert summary(final) == {"final/train_loss": 1.0, "final/steps": 6.0, "final/validation/eval_loss": 2.0}


def _wait(cond: Any, timeout: float = 30) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return True
        done.wait(0.01)
    return False

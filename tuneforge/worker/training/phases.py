"""Where a run's wall time goes, and the budget that keeps evaluations and samples a small share of it.

`PhaseClock` times the run's phases (load, data, step-0 evaluation, training steps, evaluations,
samples, checkpoints, publish). Phases nest: a checkpoint saved inside the training loop counts as
checkpoint time, not training time, so the phases' seconds add up to the wall time less what no phase
covers. `run()` reports the breakdown as one event at the end (`data["phases"]`).

`EvalBudget` decides, at each evaluation of the default cadence (once per epoch), whether to run it
and its samples given `training.eval_budget`: the share of the wall time that evaluations and samples
may take. It keeps the share of the time so far within the budget (an evaluation that would exceed it
is skipped: the interval stretches), and projects the run's end from what it has measured (the mean
training step, the mean evaluation and sample pass) to keep room for the last evaluation and samples,
which always run, as do those at step 0 (the "before"). Its decisions depend on time, so it only ever
skips what cannot change the adapter: samples (the RNG is forked around them), and evaluations no one
reads but the user (neither early stopping nor a plateau schedule, on one device). A run with a budget
trains exactly as one without, and an exact resume replays the same steps. An explicit
`training.eval_every` is the user's cadence, run in full.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    LOAD = "load"  # the base model, quantized, LoRA attached
    DATA = "data"  # rows normalized, split, encoded; the sample prompts
    BASELINE = "baseline_evaluation"  # the step-0 evaluation
    TRAINING = "training"  # the optimizer steps, with their logging and stop checks
    EVALUATIONS = "evaluations"  # held-out evaluations after step 0 (and the test split's)
    SAMPLES = "samples"  # sample generations
    CHECKPOINTS = "checkpoints"  # checkpoints written (and handed to the reporter)
    PUBLISH = "publish"  # the final adapter written into place


# What the budget counts: every evaluation and every sample generation.
BUDGETED = (Phase.BASELINE, Phase.EVALUATIONS, Phase.SAMPLES)


@dataclass
class _Open:
    phase: Phase
    started: float
    inner: float = 0.0  # seconds of the phases run inside this one so far


@dataclass
class PhaseClock:
    started: float = field(default_factory=time.perf_counter)
    seconds: dict[Phase, float] = field(default_factory=lambda: dict.fromkeys(Phase, 0.0))
    counts: dict[Phase, int] = field(default_factory=lambda: dict.fromkeys(Phase, 0))
    _open: list[_Open] = field(default_factory=list)

    @contextmanager
    def timed(self, phase: Phase) -> Iterator[None]:
        entry = _Open(phase, time.perf_counter())
        self._open.append(entry)
        try:
            yield
        finally:
            total = time.perf_counter() - entry.started
            self._open.pop()
            self.seconds[phase] += total - entry.inner
            self.counts[phase] += 1
            if self._open:
                self._open[-1].inner += total

    def so_far(self, phase: Phase) -> float:
        """The phase's seconds, including its current run if it is open (the training loop is, while
        the budget decides)."""
        now = time.perf_counter()
        running = 0.0
        for i, entry in enumerate(self._open):
            if entry.phase == phase:
                # Its inner phases that are still open have not been added to `inner` yet.
                still_open = now - self._open[i + 1].started if i + 1 < len(self._open) else 0.0
                running += now - entry.started - entry.inner - still_open
        return self.seconds[phase] + running

    def wall(self) -> float:
        return time.perf_counter() - self.started

    def budgeted(self) -> float:
        return sum(self.seconds[p] for p in BUDGETED)

    def mean(self, *phases: Phase) -> float | None:
        n = sum(self.counts[p] for p in phases)
        return sum(self.seconds[p] for p in phases) / n if n else None

    def breakdown(self) -> dict[str, Any]:
        wall = self.wall()
        timed = sum(self.seconds.values())
        return {
            "wall_seconds": round(wall, 3),
            "phases": {p.value: {"seconds": round(self.seconds[p], 3), "count": self.counts[p]} for p in Phase},
            "other_seconds": round(max(0.0, wall - timed), 3),
            "eval_and_samples_share": round(self.budgeted() / wall, 4) if wall > 0 else 0.0,
        }

    def summary(self) -> str:
        """One line for the event: each phase that took time, longest first."""
        wall = self.wall()
        parts = [
            f"{p.value.replace('_', ' ')} {self.seconds[p]:.1f} s" + (f" (x{n})" if (n := self.counts[p]) > 1 else "")
            for p in sorted(Phase, key=lambda p: -self.seconds[p])
            if self.counts[p]
        ]
        share = self.budgeted() / wall if wall > 0 else 0.0
        return f"{wall:.1f} s: " + ", ".join(parts) + f"; evaluations and samples {share:.1%} of it"


@dataclass
class EvalBudget:
    """Whether the evaluation (and the samples) due at a step may run within `share` of the wall time.

    A pass runs when, with it, evaluations and samples stay within the share of the time so far (so
    they are spread over the run, not spent up front), and when there is still room for the last
    evaluation and samples in the share of the run's projected end. What the clock decides never
    changes training: see the module's docstring."""

    share: float | None  # None: no budget (null, or an explicit `training.eval_every`)
    clock: PhaseClock
    total_steps: int
    # Evaluations that steer training (early stopping, a plateau schedule) or that every rank must make.
    evaluations_required: bool
    will_sample: bool
    has_validation: bool
    skipped: dict[str, int] = field(default_factory=lambda: {"evaluations": 0, "samples": 0})
    _first_step: int = 0

    def start_training(self, step: int) -> None:
        """Where this attempt's training starts (a resumed one: its checkpoint's step)."""
        self._first_step = step

    def allows_evaluation(self, step: int) -> bool:
        if self.share is None or self.evaluations_required or step >= self.total_steps:
            return True
        return self._fits(step, self.clock.mean(Phase.BASELINE, Phase.EVALUATIONS), "evaluations")

    def allows_samples(self, step: int) -> bool:
        if self.share is None or step == 0 or step >= self.total_steps:
            return True
        return self._fits(step, self.clock.mean(Phase.SAMPLES), "samples")

    def _fits(self, step: int, cost: float | None, what: str) -> bool:
        assert self.share is not None
        cost = cost or 0.0  # never measured yet (a resumed attempt): run it once and measure
        spent = self.clock.budgeted() + cost
        wall = self.clock.wall() + cost
        done = step - self._first_step
        per_step = self.clock.so_far(Phase.TRAINING) / done if done > 0 else 0.0
        last = (self.clock.mean(Phase.BASELINE, Phase.EVALUATIONS) or 0.0) if self.has_validation else 0.0
        last += (self.clock.mean(Phase.SAMPLES) or 0.0) if self.will_sample else 0.0
        projected = wall + (self.total_steps - step) * per_step + last
        if spent <= self.share * wall and spent + last <= self.share * projected:
            return True
        self.skipped[what] += 1
        return False

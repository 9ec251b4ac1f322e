"""A sweep's trials as read from their jobs: status, objective value, whether pruned, and the best."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState
from sqlalchemy.orm import Session

from tuneforge.app.db.models import Job, Sweep, SweepTrial
from tuneforge.app.sweeps import repository
from tuneforge.app.sweeps.study import TrialRecord, trial_state
from tuneforge.contract.status import JobStatus, StopReason


@dataclass
class TrialView:
    trial: SweepTrial
    job: Job
    value: float | None
    pruned: bool
    intermediate: dict[int, float]
    reported_at: dict[int, float] = field(default_factory=dict)

    def record(self) -> TrialRecord:
        state = TrialState.PRUNED if self.pruned else trial_state(self.job.status, self.value)
        finished = self.job.finished_at.timestamp() if self.job.finished_at is not None else None
        return TrialRecord(
            self.trial.number,
            dict(self.trial.params),
            state,
            self.value,
            self.intermediate,
            reported_at=self.reported_at,
            finished_at=finished if state != TrialState.RUNNING else None,
        )


def final_value(job: Job, metric: str) -> float | None:
    """The objective, from the trial's own final metrics (the last evaluation of the adapter it kept)."""
    if job.status != JobStatus.SUCCEEDED:
        return None
    validation = (job.final_metrics or {}).get("validation") or {}
    value = validation.get(metric)
    return float(value) if isinstance(value, int | float) else None


def _metric_at(eval_loss: float | None, extra: Any, metric: str) -> float | None:
    if metric == "eval_loss":
        return eval_loss
    value = (extra or {}).get(metric) if isinstance(extra, dict) else None
    return float(value) if isinstance(value, int | float) else None


def load(session: Session, sweep: Sweep, *, with_evals: bool = True) -> list[TrialView]:
    rows = repository.trials(session, sweep.id)
    points = repository.eval_points(session, [j.id for _, j in rows]) if with_evals else {}
    views = []
    for trial, job in rows:
        inter, reported_at = {}, {}
        for step, eval_loss, extra, written in points.get(job.id, []):
            v = _metric_at(eval_loss, extra, sweep.objective_metric)
            if v is not None:
                inter[step], reported_at[step] = v, written.timestamp()
        pruned = job.status == JobStatus.CANCELLED and job.stop_reason == StopReason.PRUNED
        views.append(TrialView(trial, job, final_value(job, sweep.objective_metric), pruned, inter, reported_at))
    return views


def best(sweep: Sweep, views: list[TrialView]) -> TrialView | None:
    done = [v for v in views if v.value is not None and not v.pruned]
    if not done:
        return None
    sign = 1.0 if sweep.direction == "minimize" else -1.0
    return min(done, key=lambda v: (sign * (v.value or 0.0), v.trial.number))

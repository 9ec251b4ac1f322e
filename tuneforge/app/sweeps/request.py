"""The POST body of a sweep: a job body (JobCreate) plus the search."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from tuneforge.app.jobs.request import JobCreate
from tuneforge.contract.spec import Strict

Strategy = Literal["grid", "random", "tpe"]
Direction = Literal["minimize", "maximize"]
PrunerName = Literal["none", "median", "hyperband"]

# What each task's evaluation reports (tuneforge/worker/training/evaluation.py), and which way is better.
TASK_METRICS: dict[str, dict[str, Direction]] = {
    "causal_lm": {"eval_loss": "minimize", "perplexity": "minimize"},
    "sequence_classification": {"eval_loss": "minimize", "accuracy": "maximize", "macro_f1": "maximize"},
    "regression": {"eval_loss": "minimize", "mse": "minimize", "mae": "minimize", "r2": "maximize"},
}
ALIASES = {"f1": "macro_f1"}


class Objective(Strict):
    metric: str = Field("eval_loss", min_length=1, max_length=64, description="A metric the task's evaluation reports.")
    direction: Direction | None = Field(None, description="Defaults to the metric's natural direction.")


class PrunerSpec(Strict):
    type: PrunerName = "none"
    n_startup_trials: int = Field(
        2, ge=0, le=1000, description="Trials that must finish before any is pruned (median)."
    )
    n_warmup_steps: int = Field(0, ge=0, description="Steps a trial runs before it can be pruned (median).")
    min_resource: int = Field(1, ge=1, description="Hyperband: the smallest step a trial is judged at.")


SWEEP_FIELDS = frozenset(("search_space", "strategy", "objective", "max_trials", "max_parallel", "pruner"))


class SweepCreate(JobCreate):
    """Body of POST /v1/fine_tuning/sweeps: every job field, which each trial starts from, plus the search.
    `seed` seeds the sampler and is every trial's training seed (trials differ only in their parameters)."""

    search_space: dict[str, dict[str, Any]] = Field(
        max_length=32,
        description='Dotted spec path -> {"values": [...]}, {"uniform": [lo, hi]}, {"log_uniform": [lo, hi]} '
        'or {"int": [lo, hi], "step": k}.',
    )
    strategy: Strategy = "random"
    objective: Objective = Field(default_factory=Objective)
    max_trials: int | None = Field(None, ge=1, description="Default: the grid's size, or 10.")
    max_parallel: int = Field(1, ge=1, le=64, description="Trials queued or running at once.")
    pruner: PrunerSpec = Field(
        default_factory=PrunerSpec,
        description='`"none"`, `"median"`, `"hyperband"`, or an object with `type` and the pruner\'s settings.',
    )

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    def job_body(self) -> dict[str, Any]:
        """The trials' common job body, as JSON."""
        return self.model_dump(mode="json", exclude_unset=True, exclude=set(SWEEP_FIELDS))

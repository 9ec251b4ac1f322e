"""Response models of the sweeps API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tuneforge.app.db.models import Sweep
from tuneforge.app.db.types import unix
from tuneforge.app.sweeps.trials import TrialView
from tuneforge.contract.status import JobStatus, SweepStatus


class BestTrial(BaseModel):
    number: int
    job_id: str
    params: dict[str, Any]
    value: float
    fine_tuned_model: str | None = None
    adapter_url: str = Field(description="Where the best trial's adapter downloads from.")


class SweepTrialObject(BaseModel):
    object: Literal["fine_tuning.sweep.trial"] = "fine_tuning.sweep.trial"
    number: int
    job_id: str
    params: dict[str, Any]
    status: JobStatus = Field(description="The trial's job status.")
    pruned: bool = Field(description="Stopped by the pruner (status `cancelled`, stop_reason `pruned`).")
    value: float | None = Field(None, description="The objective, from the job's final metrics.")
    last_reported: float | None = Field(None, description="The objective at the trial's latest evaluation.")
    step: int
    total_steps: int | None = None
    created_at: int

    @classmethod
    def of(cls, v: TrialView) -> SweepTrialObject:
        last = v.intermediate[max(v.intermediate)] if v.intermediate else None
        return cls(
            number=v.trial.number,
            job_id=v.job.id,
            params=v.trial.params,
            status=v.job.status,
            pruned=v.pruned,
            value=v.value,
            last_reported=last,
            step=v.job.step,
            total_steps=v.job.total_steps,
            created_at=unix(v.trial.created_at) or 0,
        )


class SweepObject(BaseModel):
    id: str
    object: Literal["fine_tuning.sweep"] = "fine_tuning.sweep"
    organization_id: str
    status: SweepStatus
    model: str
    training_file: str
    validation_file: str | None = None
    strategy: str
    objective: dict[str, str]
    search_space: dict[str, Any]
    pruner: dict[str, Any]
    max_trials: int
    max_parallel: int
    seed: int
    trials_created: int
    trial_counts: dict[str, int] = Field(description="Trials by job status, plus `pruned`.")
    best_trial: BestTrial | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    created_at: int
    finished_at: int | None = None

    @classmethod
    def of(cls, sweep: Sweep, views: list[TrialView], best: TrialView | None) -> SweepObject:
        counts = {s.value: 0 for s in JobStatus} | {"pruned": 0}
        for v in views:
            counts[v.job.status.value] += 1
            counts["pruned"] += int(v.pruned)
        best_obj = None
        if best is not None and best.value is not None:
            best_obj = BestTrial(
                number=best.trial.number,
                job_id=best.job.id,
                params=best.trial.params,
                value=best.value,
                fine_tuned_model=best.job.fine_tuned_model,
                adapter_url=f"/v1/fine_tuning/jobs/{best.job.id}/adapter",
            )
        body = sweep.job_body
        return cls(
            id=sweep.id,
            organization_id=sweep.organization_id,
            status=sweep.status,
            model=body["model"],
            training_file=body["training_file"],
            validation_file=body.get("validation_file"),
            strategy=sweep.strategy,
            objective={"metric": sweep.objective_metric, "direction": sweep.direction},
            search_space=sweep.search_space,
            pruner=sweep.pruner,
            max_trials=sweep.max_trials,
            max_parallel=sweep.max_parallel,
            seed=sweep.seed,
            trials_created=sweep.trials_created,
            trial_counts=counts,
            best_trial=best_obj,
            error=sweep.error,
            metadata=sweep.sweep_metadata,
            created_at=unix(sweep.created_at) or 0,
            finished_at=unix(sweep.finished_at),
        )

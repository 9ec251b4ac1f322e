"""Optuna, fed from the database. Our tables are the state (sweeps, sweep_trials, jobs, job_metrics);
each decision rebuilds an in-memory Optuna study from them, so any API process can make it, after
any restart, and get the same answer: `propose` asks the sampler for trial n, `should_prune` asks
the pruner about a running trial. The job's final metrics are the `tell`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from app.sweeps import space as space_mod
from contract.status import JobStatus

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class TrialRecord:
    """One trial as Optuna needs it: parameters, state, final value, evaluations so far."""

    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None
    intermediate: dict[int, float] = field(default_factory=dict)


def trial_state(status: JobStatus, value: float | None) -> TrialState:
    if status == JobStatus.SUCCEEDED:
        return TrialState.COMPLETE if value is not None else TrialState.FAIL
    if status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return TrialState.FAIL
    return TrialState.RUNNING


def _seed(seed: int, number: int) -> int:
    """A per-trial sampler seed: the same sweep with the same history proposes the same trial n."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "big")


def _sampler(strategy: str, seed: int, number: int, max_trials: int) -> optuna.samplers.BaseSampler:
    if strategy == "tpe":
        startup = max(2, min(10, max_trials // 3))
        return optuna.samplers.TPESampler(seed=_seed(seed, number), n_startup_trials=startup, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=_seed(seed, number))


def _pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    if spec.get("type") == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.get("n_startup_trials", 2), n_warmup_steps=spec.get("n_warmup_steps", 0)
        )
    if spec.get("type") == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec.get("min_resource", 1))
    return optuna.pruners.NopPruner()


def build(
    name: str,
    direction: str,
    distributions: dict[str, BaseDistribution],
    records: list[TrialRecord],
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: dict[str, Any] | None = None,
) -> optuna.Study:
    """An in-memory study holding every trial so far, numbered as ours are."""
    study = optuna.create_study(
        study_name=name,
        direction=StudyDirection.MINIMIZE if direction == "minimize" else StudyDirection.MAXIMIZE,
        sampler=sampler,
        pruner=_pruner(pruner or {}),
    )
    for r in sorted(records, key=lambda r: r.number):
        study.add_trial(
            create_trial(
                params=r.params,
                distributions=distributions,
                state=r.state,
                value=r.value if r.state == TrialState.COMPLETE else None,
                intermediate_values=r.intermediate,
            )
        )
    return study


def propose(
    name: str,
    strategy: str,
    direction: str,
    raw_space: dict[str, Any],
    seed: int,
    max_trials: int,
    number: int,
    records: list[TrialRecord],
) -> dict[str, Any]:
    """Trial `number`'s parameters. A grid takes its combinations in order; random and TPE ask Optuna."""
    distributions = space_mod.parse_space(raw_space)
    if strategy == "grid":
        for i, params in enumerate(space_mod.grid(distributions)):
            if i == number:
                return params
        raise IndexError(f"the grid has no combination {number}")
    study = build(name, direction, distributions, records, sampler=_sampler(strategy, seed, number, max_trials))
    return dict(study.ask(distributions).params)


def should_prune(
    name: str,
    direction: str,
    raw_space: dict[str, Any],
    pruner: dict[str, Any],
    records: list[TrialRecord],
    number: int,
) -> bool:
    """Whether the pruner stops running trial `number`, given every trial's evaluations so far."""
    if pruner.get("type", "none") == "none":
        return False
    distributions = space_mod.parse_space(raw_space)
    study = build(name, direction, distributions, records, pruner=pruner)
    trial: FrozenTrial = study.trials[[r.number for r in sorted(records, key=lambda r: r.number)].index(number)]
    if not trial.intermediate_values:
        return False
    return bool(study.pruner.prune(study, trial))

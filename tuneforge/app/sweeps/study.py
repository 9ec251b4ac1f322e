"""Optuna, fed from the database. Our tables are the state (sweeps, sweep_trials, jobs, job_metrics);
each decision rebuilds an in-memory Optuna study from them, so any API process can make it, after
any restart, and get the same answer: `propose` asks the sampler for trial n, `to_prune` asks the
pruner which running trials to stop. The job's final metrics are the `tell`.

The median pruner only looks at the trials' evaluations and final states, so a study holding the
trials as they are now is enough. Hyperband is not stateless: its successive halving records, in the
study's storage, each trial's value at each rung it reaches *when the pruner is asked*, and compares a
trial only with the values recorded at that rung before it. A study rebuilt from final states has no
such records, so a trial would only ever compete with itself and never be pruned. For Hyperband the
study is therefore replayed: every evaluation and every trial's end, in the order they were written,
asking the pruner at each evaluation as a live study would have been asked."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from tuneforge.app.sweeps import space as space_mod
from tuneforge.contract.status import JobStatus

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class TrialRecord:
    """One trial as Optuna needs it: parameters, state, final value, evaluations so far."""

    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None
    intermediate: dict[int, float] = field(default_factory=dict)
    # When each evaluation was written, and when the trial ended (unix seconds): the replay's order.
    # Without them a trial replays after the trials numbered before it, evaluations then its end.
    reported_at: dict[int, float] = field(default_factory=dict)
    finished_at: float | None = None


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


def to_prune(
    name: str,
    direction: str,
    raw_space: dict[str, Any],
    pruner: dict[str, Any],
    records: list[TrialRecord],
) -> set[int]:
    """The numbers of the running trials that the pruner stops, given every trial's evaluations."""
    running = {r.number for r in records if r.state == TrialState.RUNNING and r.intermediate}
    if pruner.get("type", "none") == "none" or not running:
        return set()
    if pruner.get("type") == "hyperband":
        return _replay(name, direction, pruner, records) & running
    distributions = space_mod.parse_space(raw_space)
    ordered = sorted(records, key=lambda r: r.number)
    study = build(name, direction, distributions, ordered, pruner=pruner)
    pruner_ = study.pruner
    return {
        r.number for r, t in zip(ordered, study.trials, strict=True) if r.number in running and pruner_.prune(study, t)
    }


def should_prune(
    name: str,
    direction: str,
    raw_space: dict[str, Any],
    pruner: dict[str, Any],
    records: list[TrialRecord],
    number: int,
) -> bool:
    """Whether the pruner stops running trial `number`, given every trial's evaluations so far."""
    return number in to_prune(name, direction, raw_space, pruner, records)


def _replay(name: str, direction: str, pruner: dict[str, Any], records: list[TrialRecord]) -> set[int]:
    """Hyperband's verdicts, from a study that lives the sweep's history again: the trials are created
    in number order (the bracket of a trial is a hash of the study name and its number), then every
    evaluation and every end is applied in the order written. At each evaluation the pruner is asked,
    which records the trial's rung values as it did live. A trial that has ended keeps its real
    outcome whatever the replay says; a running trial the pruner stops is the verdict, and reports
    nothing after it."""
    study = optuna.create_study(
        study_name=name,
        direction=StudyDirection.MINIMIZE if direction == "minimize" else StudyDirection.MAXIMIZE,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=_pruner(pruner),
    )
    by_number = {r.number: r for r in records}
    handles: dict[int, optuna.Trial] = {}
    for number in range(max(by_number) + 1):
        handles[number] = study.ask()
        if number not in by_number:  # no such trial: a gap keeps the numbers (and brackets) ours
            study.tell(handles[number], state=TrialState.FAIL)

    events: list[tuple[float, int, int, int]] = []  # (when, trial, 0 evaluation | 1 end, step)
    for r in records:
        default = float(r.number)
        for step in r.intermediate:
            events.append((r.reported_at.get(step, default), r.number, 0, step))
        if r.state != TrialState.RUNNING:
            # after its evaluations, even one whose row was written after the job's end
            end = max([*r.reported_at.values(), default if r.finished_at is None else r.finished_at])
            events.append((end, r.number, 1, 0))

    verdicts: set[int] = set()
    for _, number, kind, step in sorted(events):
        r, trial = by_number[number], handles[number]
        if number in verdicts:
            continue
        if kind == 0:
            trial.report(r.intermediate[step], step)
            if trial.should_prune() and r.state == TrialState.RUNNING:
                verdicts.add(number)
        elif r.state == TrialState.COMPLETE:
            study.tell(trial, r.value)
        else:
            study.tell(trial, state=TrialState.PRUNED if r.state == TrialState.PRUNED else TrialState.FAIL)
    return verdicts

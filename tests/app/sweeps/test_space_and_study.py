"""The pure parts of sweeps: search spaces, grid order, trial bodies, and the Optuna glue."""

from __future__ import annotations

import copy
import random
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuneforge.app.sweeps import space, study
from tuneforge.contract.spec import SpecError

SPACE = {"lora.r": {"values": [4, 8]}, "training.learning_rate": {"int": [1, 5], "step": 2}}


def test_grid_is_every_combination_first_path_slowest() -> None:
    dists = space.parse_space(SPACE)
    assert space.grid_size(dists) == 6
    assert list(space.grid(dists))[:4] == [
        {"lora.r": 4, "training.learning_rate": 1},
        {"lora.r": 4, "training.learning_rate": 3},
        {"lora.r": 4, "training.learning_rate": 5},
        {"lora.r": 8, "training.learning_rate": 1},
    ]


def test_apply_writes_dotted_paths_into_a_copy() -> None:
    body = {"lora": {"alpha": 16}}
    out = space.apply(body, {"lora.r": 8, "training.loss.label_smoothing": 0.1})
    assert out == {"lora": {"alpha": 16, "r": 8}, "training": {"loss": {"label_smoothing": 0.1}}}
    assert body == {"lora": {"alpha": 16}}
    with pytest.raises(SpecError) as err:
        space.apply({"lora": {"r": 4}}, {"lora.r.x": 1})
    assert err.value.param == "search_space.lora.r.x"


def test_every_method_block_is_searchable() -> None:
    """DPO's `preference` block (beta, the loss) and RFT's `reinforcement` one, beside the common blocks."""
    dims = space.parse_space(
        {"preference.beta": {"log_uniform": [0.01, 1.0]}, "reinforcement.kl_coef": {"values": [0.0, 0.1]}}
    )
    assert sorted(dims) == ["preference.beta", "reinforcement.kl_coef"]
    assert space.apply({"preference": {"loss": "sigmoid"}}, {"preference.beta": 0.5}) == {
        "preference": {"loss": "sigmoid", "beta": 0.5}
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"lora.r": {"values": [4], "uniform": [0, 1]}}, "exactly one"),
        ({"lora.r": {"int": [1, 8], "step": 3}}, "multiple of step"),
        ({"lora.dropout": {"uniform": [0.1, "x"]}}, "two numbers"),
        ({"lora.dropout": {"uniform": [0.1, 0.2], "step": 1}}, "`step` applies to `int` only"),
        ({"lora": {"values": [1]}}, "unknown spec path"),
        ({"lora.r": {"values": [4, 4]}}, "duplicates"),
        ({"lora.loss": {"values": [1]}, "lora.loss.x": {"values": [1]}}, "overlaps"),
    ],
)
def test_bad_dimensions_name_the_path(raw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as err:
        space.parse_space(raw)
    assert err.value.param.startswith("search_space.") and message in err.value.message


def test_random_and_tpe_proposals_depend_only_on_seed_number_and_history() -> None:
    raw = {"training.learning_rate": {"log_uniform": [1e-5, 1e-2]}, "lora.r": {"int": [2, 16], "step": 2}}
    for strategy in ("random", "tpe"):
        a = [study.propose("s", strategy, "minimize", raw, 7, 10, n, []) for n in range(3)]
        b = [study.propose("s", strategy, "minimize", raw, 7, 10, n, []) for n in range(3)]
        c = [study.propose("s", strategy, "minimize", raw, 8, 10, n, []) for n in range(3)]
        assert a == b and a != c and len({str(p) for p in a}) == 3
        assert all(1e-5 <= p["training.learning_rate"] <= 1e-2 and p["lora.r"] % 2 == 0 for p in a)


def test_tpe_uses_the_history_after_its_startup_trials() -> None:
    raw = {"lora.dropout": {"uniform": [0.0, 1.0]}}
    history = [
        study.TrialRecord(n, {"lora.dropout": x}, TrialState.COMPLETE, abs(x - 0.2))
        for n, x in enumerate([0.05, 0.9, 0.22, 0.7, 0.18, 0.5, 0.95, 0.3])
    ]
    proposals = [study.propose("s", "tpe", "minimize", raw, 1, 12, 8 + k, history)["lora.dropout"] for k in range(4)]
    assert sum(1 for p in proposals if p < 0.5) >= 3  # drawn toward the good region


def test_median_pruner_prunes_a_trial_worse_than_the_completed_ones_at_that_step() -> None:
    raw = {"training.learning_rate": {"values": [0.01, 1e-9]}}
    done = study.TrialRecord(0, {"training.learning_rate": 0.01}, TrialState.COMPLETE, 1.0, {2: 3.0, 4: 1.0})
    bad = study.TrialRecord(1, {"training.learning_rate": 1e-9}, TrialState.RUNNING, None, {2: 5.0})
    good = study.TrialRecord(1, {"training.learning_rate": 1e-9}, TrialState.RUNNING, None, {2: 2.0})
    median = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    assert study.should_prune("s", "minimize", raw, median, [done, bad], 1)
    assert not study.should_prune("s", "minimize", raw, median, [done, good], 1)
    assert not study.should_prune("s", "maximize", raw, median, [done, bad], 1)  # higher is better there
    assert not study.should_prune("s", "minimize", raw, {"type": "none"}, [done, bad], 1)
    assert not study.should_prune("s", "minimize", raw, median | {"n_startup_trials": 2}, [done, bad], 1)


def _live_hyperband(name: str, n_trials: int, parallel: int, last_step: int, seed: int) -> list[tuple[Any, ...]]:
    """Trials run through a *live* Optuna study with the HyperbandPruner, `parallel` at a time, each
    reporting an evaluation per step in turn and asking `should_prune` after each, as a driver that
    judged every evaluation at once would. Returns, for every evaluation, the history as our tables
    would hold it at that moment (TrialRecords with their write times) and the live verdict."""
    rng = random.Random(seed)
    live = optuna.create_study(
        study_name=name, pruner=optuna.pruners.HyperbandPruner(min_resource=1), sampler=optuna.samplers.RandomSampler(0)
    )
    records: dict[int, study.TrialRecord] = {}
    handles: dict[int, optuna.Trial] = {}
    quality: dict[int, float] = {}
    checks: list[tuple[Any, ...]] = []
    clock, started = 0.0, 0
    while started < n_trials or handles:
        while len(handles) < parallel and started < n_trials:
            handles[started] = live.ask()
            quality[started] = rng.uniform(1.0, 2.0)
            records[started] = study.TrialRecord(started, {"training.learning_rate": 0.5}, TrialState.RUNNING, None)
            started += 1
        for number in sorted(handles):
            rec, trial = records[number], handles[number]
            step = len(rec.intermediate)
            value = quality[number] * (1 + 1 / (1 + step)) + rng.gauss(0, 0.02)
            clock += 1
            rec.intermediate[step], rec.reported_at[step] = value, clock
            trial.report(value, step)
            verdict = trial.should_prune()
            snapshot = [copy.deepcopy(r) for r in records.values()]
            checks.append((number, step, verdict, snapshot))
            if verdict or step == last_step:
                clock += 1
                rec.finished_at = clock
                if verdict:
                    rec.state = TrialState.PRUNED
                    live.tell(trial, state=TrialState.PRUNED)
                else:
                    rec.state, rec.value = TrialState.COMPLETE, value
                    live.tell(trial, value)
                del handles[number]
    return checks


@pytest.mark.parametrize(("parallel", "seed"), [(1, 0), (3, 1)])
def test_hyperband_rebuilt_from_our_rows_decides_as_a_live_study(parallel: int, seed: int) -> None:
    """Hyperband (successive halving in 4 brackets here: steps 0..27, min_resource 1, factor 3) keeps
    state in its study: each trial's value at each rung it reached, compared only with those recorded
    at that rung before it. Our rows replayed give the verdict a live study gave, at every evaluation
    of every trial, one trial at a time or three interleaved. A study rebuilt from the trials' final
    states (as for the median pruner) holds no rung values and never prunes."""
    name, raw = "ftsweep-hb", {"training.learning_rate": {"uniform": [0.0, 1.0]}}
    hyperband = {"type": "hyperband", "min_resource": 1}
    checks = _live_hyperband(name, n_trials=14, parallel=parallel, last_step=27, seed=seed)
    pruned = [c for c in checks if c[2]]
    assert len(pruned) >= 3 and len({c[1] for c in pruned}) >= 2  # pruned at more than one rung
    for number, step, verdict, snapshot in checks:
        assert study.should_prune(name, "minimize", raw, hyperband, snapshot, number) == verdict, (number, step)

    number, step, _, snapshot = pruned[0]
    rebuilt = study.build(name, "minimize", space.parse_space(raw), snapshot, pruner=hyperband)
    target = next(t for t in rebuilt.trials if t.number == number)
    assert not rebuilt.pruner.prune(rebuilt, target)

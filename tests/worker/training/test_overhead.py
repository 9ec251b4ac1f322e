"""A job's own overhead: the per-phase time event, batched generation with the KV cache, and the budget
that keeps evaluations and samples a small share of the run (`training.eval_budget`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tests.helpers import make_spec, shakespeare_rows
from tuneforge.worker.training.model import load_tokenizer
from tuneforge.worker.training.phases import Phase, PhaseClock
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run
from tuneforge.worker.training.samples import SamplePrompt, generate_samples
from tuneforge.worker.training.setup import prepare_model


def phase_event(rep: MemoryReporter) -> dict[str, Any]:
    [data] = [d for _, _, d in rep.events if d and "phases" in d]
    return data


def test_the_run_reports_its_time_by_phase(model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(
        training={"batch_size": 8, "max_steps": 4, "eval_every": 2, "save_every": 2},
        samples={"from_validation": 1, "max_new_tokens": 4},
    )
    rep = MemoryReporter()
    run(spec, model_dir, shakespeare_rows(40), None, tmp_path, rep)

    data = phase_event(rep)
    phases = data["phases"]
    assert set(phases) == {p.value for p in Phase}
    counts = {name: p["count"] for name, p in phases.items()}
    # Evaluations at steps 2 and 4, samples at 0, 2 and 4, checkpoints at 2 and the end.
    assert counts == {
        "load": 1,
        "data": 1,
        "baseline_evaluation": 1,
        "training": 1,
        "evaluations": 2,
        "samples": 3,
        "checkpoints": 2,
        "publish": 1,
    }
    seconds = sum(p["seconds"] for p in phases.values())
    assert all(p["seconds"] > 0 for p in phases.values())
    # Every figure is rounded to the millisecond: half a millisecond each way per rounded number.
    rounding = 0.0005 * (len(phases) + 2)
    assert seconds + data["other_seconds"] >= data["wall_seconds"] * 0.999 - rounding
    assert seconds <= data["wall_seconds"] + rounding  # nested phases are not counted twice
    budgeted = sum(phases[p]["seconds"] for p in ("baseline_evaluation", "evaluations", "samples"))
    # The share is of unrounded seconds; recomputed from millisecond-rounded ones it can differ by
    # about (half a millisecond x 4 rounded numbers) / wall: 0.0014 was seen on a 0.4 s run.
    assert (
        abs(data["eval_and_samples_share"] - budgeted / data["wall_seconds"]) < 1e-3 + rounding / data["wall_seconds"]
    )
    assert data["eval_budget"] == 0.1 and data["skipped"] == {"evaluations": 0, "samples": 0}
    # The message reads as a line: the wall time, the phases by time, the share.
    message = next(m for _, m, d in rep.events if d is data)
    assert message.startswith("Finished in ") and "training" in message and "evaluations and samples" in message


def test_nested_phases_count_once() -> None:
    clock = PhaseClock()
    with clock.timed(Phase.TRAINING):
        with clock.timed(Phase.EVALUATIONS):
            assert clock.so_far(Phase.TRAINING) < 0.01
        with clock.timed(Phase.CHECKPOINTS):
            pass
    total = sum(clock.seconds.values())
    assert total <= clock.wall() and clock.counts[Phase.TRAINING] == 1


def test_samples_are_one_batch_through_the_kv_cache_and_match_one_at_a_time(model_dir: Path) -> None:
    """Three prompts of different lengths: one prefill of all three (left-padded), then one position
    per new token for all three at once, and the same greedy tokens as generating each alone."""
    spec = make_spec()
    model = prepare_model(spec, model_dir, None, torch.device("cpu"), MemoryReporter())
    tok = load_tokenizer(model_dir)
    prompts = [SamplePrompt(t, list(tok(t)["input_ids"])) for t in ("First Citizen:", "All:", "Before we proceed any")]
    shapes: list[tuple[int, int]] = []
    embed = model.get_input_embeddings()  # type: ignore[operator]  # prepare_model returns an nn.Module
    handle = embed.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)) and None)  # type: ignore[func-returns-value]
    rng = torch.get_rng_state()
    batched = generate_samples(model, prompts, tok, 5, 64, torch.device("cpu"), batch_size=8)
    handle.remove()

    width = max(len(p.ids) for p in prompts)
    assert shapes[0] == (3, width)  # the prompts together, padded to the longest
    assert shapes[1:] == [(3, 1)] * (len(shapes) - 1)  # then one new position per step: the cache
    assert len(shapes) == max(i["tokens"] for i in batched)
    assert model.training and torch.equal(torch.get_rng_state(), rng)  # train mode back, RNG untouched

    alone = [generate_samples(model, [p], tok, 5, 64, torch.device("cpu"))[0] for p in prompts]
    assert [i["output"] for i in batched] == [i["output"] for i in alone]
    assert [i["prompt"] for i in batched] == [p.text for p in prompts]  # in the prompts' order


def test_the_budget_bounds_evaluations_and_samples_and_leaves_training_alone(model_dir: Path, tmp_path: Path) -> None:
    """Two steps an epoch: the default cadence (once per epoch) evaluates and samples every other step,
    a large share of the run. With the default budget they stay within about 10% of it, the first and
    last still run, and the adapter is the very one trained without a budget."""
    rows, validation = shakespeare_rows(24)[:16], shakespeare_rows(24)[16:]
    training: dict[str, Any] = {"batch_size": 8, "max_steps": 40, "learning_rate": 1e-2}
    samples = {"from_validation": 1, "max_new_tokens": 3}

    free = MemoryReporter()
    unbounded = make_spec(training={**training, "eval_budget": None}, samples=samples)
    plain = run(unbounded, model_dir, rows, validation, tmp_path / "free", free)
    rep = MemoryReporter()
    bounded = run(make_spec(training=training, samples=samples), model_dir, rows, validation, tmp_path / "b", rep)

    assert [step for step, _ in free.samples_by_step] == list(range(0, 41, 2))  # every epoch, unbounded
    data = phase_event(rep)
    # Within the budget; the last evaluation and samples, run whatever they cost, may overshoot a little.
    assert data["eval_and_samples_share"] <= 0.1 * 1.25, data
    assert data["eval_and_samples_share"] < phase_event(free)["eval_and_samples_share"]
    assert data["skipped"]["evaluations"] > 0
    sampled = [step for step, _ in rep.samples_by_step]
    assert sampled[0] == 0 and sampled[-1] == 40 and len(sampled) < len(free.samples_by_step)
    evaluated = [p["step"] for p in rep.points if "eval_loss" in p]
    assert evaluated[0] == 0 and evaluated[-1] == 40
    assert sum("training.eval_budget" in message for _, message, _ in rep.events) == 1  # said once, when it began
    a = load_file(plain.adapter_dir / "adapter_model.safetensors")
    b = load_file(bounded.adapter_dir / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_an_explicit_cadence_and_evaluations_that_steer_training_run_in_full(model_dir: Path, tmp_path: Path) -> None:
    """`eval_every` set by the user runs in full; so do evaluations early stopping reads (skipping one
    by the clock would make the adapter depend on the machine's speed)."""
    rows, validation = shakespeare_rows(24)[:16], shakespeare_rows(24)[16:]
    for training in (
        {"eval_every": 1},
        {"early_stopping": {"patience": 100}},
    ):
        rep = MemoryReporter()
        spec = make_spec(training={"batch_size": 8, "max_steps": 8, "eval_budget": 0.01, **training})
        run(spec, model_dir, rows, validation, tmp_path / next(iter(training)), rep)
        every = 1 if "eval_every" in training else 2
        assert [p["step"] for p in rep.points if "eval_loss" in p] == list(range(0, 9, every))
        assert phase_event(rep)["skipped"]["evaluations"] == 0

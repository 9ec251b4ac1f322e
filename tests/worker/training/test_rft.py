"""Reinforcement fine-tuning (GRPO) on the tiny model: a grader the tiny model can satisfy (a reward for
writing the letter `e`, which about a tenth of its fresh two-token samples contain), the reward rises over a few steps,
and with the policy gradient's sign flipped the same run's reward falls: a sign error cannot pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import ROOT, make_spec
from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import StopReason
from tuneforge.worker.training import rollout
from tuneforge.worker.training.checkpoints import latest_complete
from tuneforge.worker.training.errors import StopTraining
from tuneforge.worker.training.methods import rft
from tuneforge.worker.training.methods.rft import group_advantages
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

GRADER = {
    "type": "string_check",
    "name": "has_e",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
    "operation": "ilike",
}


def prompt_rows(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"Say something, number {i}"}], "letter": "e"} for i in range(n)]


def rft_spec(steps: int = 10, training: dict[str, Any] | None = None, **reinforcement: Any) -> JobSpec:
    return make_spec(
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER}},
        reinforcement={"generations_per_prompt": 16, "max_new_tokens": 2, "eval_samples": 4, **reinforcement},
        training={"max_steps": steps, "batch_size": 4, "learning_rate": 5e-2, "eval_every": steps, **(training or {})},
        data={"validation_split": 0.0},
        # The tiny model's frozen random head keeps its logits near uniform whatever its layers do; an
        # adapter on the head lets a few steps move the distribution (as a real model's layers can).
        lora={"dropout": 0.0, "target_modules": ["q_proj", "v_proj", "lm_head"]},
    )


def sampled_reward(points: list[dict[str, Any]], steps: range) -> float:
    # Training points (they carry a loss): the rewards of the completions sampled at those steps.
    values = [p["extra"]["reward"] for p in points if p.get("step") in steps and "loss" in p and "extra" in p]
    assert values, "the loss reports a reward per logging step"
    return sum(values) / len(values)


def train(tmp_path: Path, model_dir: Path, spec: JobSpec) -> MemoryReporter:
    rep = MemoryReporter()
    run(spec, model_dir, prompt_rows(16), prompt_rows(4), tmp_path / "out", rep, resume=False)
    return rep


def test_group_advantages_are_normalised_within_each_group() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    adv = group_advantages(rewards)
    assert adv[0, 0] > 0 > adv[0, 1]
    torch.testing.assert_close(adv.sum(dim=1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv[1], torch.zeros(4))  # all equal: no signal


def test_the_reward_rises_and_falls_with_the_gradient_sign_flipped(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = 10
    up = train(tmp_path / "up", model_dir, rft_spec(steps))
    before, after = sampled_reward(up.points, range(1, 2)), sampled_reward(up.points, range(steps - 1, steps + 1))
    assert after > before + 0.3, (before, after)
    metrics = next(p["extra"] for p in up.points if "loss" in p and "extra" in p)
    for name in ("reward_std", "no_signal_groups", "kl", "mean_completion_length", "clip_fraction", "grader_errors"):
        assert name in metrics
    # Evaluations (greedy, validation prompts; step 0 is the base's) log their reward as `valid_reward`,
    # never under the training steps' `reward` (sampled completions): one series, one kind of value.
    evaluations = [p["extra"] for p in up.points if "eval_loss" in p]
    assert [e["valid_reward"] for e in evaluations] == [-p["eval_loss"] for p in up.points if "eval_loss" in p]
    assert evaluations[0] and not any("reward" in e or "mean_completion_length" in e for e in evaluations)

    monkeypatch.setattr(rft, "group_advantages", lambda r: -group_advantages(r))
    down = train(tmp_path / "down", model_dir, rft_spec(steps))
    flipped_before = sampled_reward(down.points, range(1, 2))
    flipped_after = sampled_reward(down.points, range(steps - 1, steps + 1))
    assert flipped_before == pytest.approx(before)  # same seed, same first rollouts
    assert flipped_after < flipped_before, (flipped_before, flipped_after)


def test_generation_goes_through_the_one_seam(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, float | None]] = []

    def spy(model: Any, prompts: list[list[int]], n: int, temperature: float | None, *rest: Any) -> list[list[int]]:
        calls.append((n, temperature))
        return rollout.hf_generate(model, prompts, n, temperature, *rest)

    monkeypatch.setattr(rollout, "GENERATE", spy)
    train(tmp_path, model_dir, rft_spec(2))
    assert (16, 1.0) in calls and (1, None) in calls  # sampled groups, and greedy evaluation


def _adapter(result_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(result_dir / "adapter_model.safetensors")


def _sampled(rep: MemoryReporter) -> dict[int, float]:
    """Each training step's mean sampled reward: equal only if the same completions were sampled."""
    return {p["step"]: p["extra"]["reward"] for p in rep.points if "loss" in p and "extra" in p}


KILLED_RUN = """
import os, sys, time
from pathlib import Path
from tests.worker.training.test_rft import prompt_rows
from tuneforge.contract.spec import JobSpec
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

class Hang(MemoryReporter):
    def metrics(self, point):
        super().metrics(point)
        if point.get("step") == 3 and "loss" in point:  # step 3 trained, its checkpoint (at 4) not yet written
            Path(sys.argv[3]).touch()
            time.sleep(600)

spec = JobSpec.model_validate_json(sys.argv[1])
run(spec, Path(os.environ["TUNEFORGE_MODELS_DIR"]) / sys.argv[4], prompt_rows(16), prompt_rows(4), Path(sys.argv[2]),
    Hang(), resume=False)
"""


def test_kill_9_and_pause_resume_bit_for_bit_with_the_sampling_generator(
    model_dir: Path, tmp_path: Path, tiny_model: str
) -> None:
    """A run killed with SIGKILL after step 3 resumes from its step-2 checkpoint, and one paused at step 1
    resumes from the checkpoint the pause saved; both sample the same completions as a straight run (the
    sampling generator's state is in the checkpoint) and end with the same adapter, bit for bit."""
    spec = rft_spec(4, {"save_every": 2}, generations_per_prompt=4)
    rep = MemoryReporter()
    straight = run(spec, model_dir, prompt_rows(16), prompt_rows(4), tmp_path / "a", rep, resume=False)
    expected, rewards = _adapter(straight.adapter_dir), _sampled(rep)
    assert sorted(rewards) == [1, 2, 3, 4]

    killed, marker = tmp_path / "b", tmp_path / "step3"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, spec.model_dump_json(), str(killed), str(marker), tiny_model],
        cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, "the run ended before step 3"
            assert time.monotonic() < deadline, "no step 3 within 300 s"
            time.sleep(0.1)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert latest_complete(killed / "checkpoints").name == "step-00000002"  # type: ignore[union-attr]
    rep = MemoryReporter()
    resumed = run(spec, model_dir, prompt_rows(16), prompt_rows(4), killed, rep, attempt=2)
    assert any(msg == "Resumed from step 2 (attempt 2)" for _, msg, _ in rep.events)
    assert _sampled(rep) == {3: rewards[3], 4: rewards[4]}

    with pytest.raises(StopTraining) as info:
        run(spec, model_dir, prompt_rows(16), prompt_rows(4), tmp_path / "c", MemoryReporter(stop_at_step=1,
            stop_reason=StopReason.PAUSED), resume=False)  # fmt: skip
    assert info.value.reason == StopReason.PAUSED
    rep = MemoryReporter()
    unpaused = run(spec, model_dir, prompt_rows(16), prompt_rows(4), tmp_path / "c", rep)
    assert _sampled(rep) == {k: rewards[k] for k in (2, 3, 4)}

    for got in (_adapter(resumed.adapter_dir), _adapter(unpaused.adapter_dir)):
        assert got.keys() == expected.keys()
        for k in expected:
            assert torch.equal(got[k], expected[k]), k

"""Reinforcement fine-tuning (GRPO) on the tiny model: a grader the tiny model can satisfy (a reward for
writing the letter `e`, which about a tenth of its fresh two-token samples contain), the reward rises over a few steps,
and with the policy gradient's sign flipped the same run's reward falls: a sign error cannot pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import make_spec
from tuneforge.contract.spec import JobSpec
from tuneforge.worker.training import rollout
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


def rft_spec(steps: int = 10, **reinforcement: Any) -> JobSpec:
    return make_spec(
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER}},
        reinforcement={"generations_per_prompt": 16, "max_new_tokens": 2, "eval_samples": 4, **reinforcement},
        training={"max_steps": steps, "batch_size": 4, "learning_rate": 5e-2, "eval_every": steps},
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
    assert any(p.get("step") == 0 and "reward" in p.get("extra", {}) for p in up.points)  # the base's reward

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

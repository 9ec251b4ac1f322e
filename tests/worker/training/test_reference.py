"""The reference policy of a warm start (tuneforge/worker/training/reference.py): a reinforcement job
that starts from an earlier adapter is measured against that adapter, not against the base, and the
reference never becomes part of what the job saves."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.worker.training.test_rft import prompt_rows, rft_spec
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run


def _kl_by_step(rep: MemoryReporter) -> dict[int, float]:
    return {p["step"]: p["extra"]["kl"] for p in rep.points if "loss" in p and "extra" in p}


def test_a_warm_start_is_measured_against_the_adapter_it_started_from(model_dir: Path, tmp_path: Path) -> None:
    first = run(rft_spec(3), model_dir, prompt_rows(16), prompt_rows(4), tmp_path / "a", MemoryReporter(), resume=False)
    start = load_file(first.adapter_dir / "adapter_model.safetensors")
    assert any(bool(t.abs().sum() > 0) for k, t in start.items() if "lora_B" in k)  # it moved off the base

    rep = MemoryReporter()
    warm = run(
        rft_spec(3),
        model_dir,
        prompt_rows(16),
        prompt_rows(4),
        tmp_path / "b",
        rep,
        resume=False,
        init_adapter=first.adapter_dir,
    )
    kl = _kl_by_step(rep)
    # Step 1's rollouts are scored before its update: the policy is the starting adapter, so its KL to
    # the reference is nothing. Against the base (the adapter off), as before, it was not.
    assert kl[1] < 1e-6, kl
    assert kl[3] > kl[1], kl  # and training moves it away from there

    saved = load_file(warm.adapter_dir / "adapter_model.safetensors")
    assert set(saved) == set(start)  # the trained adapter only: no reference weights in the result
    assert not (warm.adapter_dir / "reference").exists()
    assert any(not torch.equal(saved[k], start[k]) for k in start)  # the trained one did train

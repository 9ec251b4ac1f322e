"""Every optimizer with every schedule, and each quantization choice, on the tiny 4-bit Llama."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_spec, shakespeare_rows
from tests.worker.training.test_optim import OPTIMIZERS
from tuneforge.contract.spec import SCHEDULERS
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

ROWS = shakespeare_rows(12, width=120)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: o["name"])
def test_optimizer_and_schedule(model_dir: Path, tmp_path: Path, optimizer: dict[str, Any], scheduler: str) -> None:
    spec = make_spec(
        optimizer=optimizer,
        scheduler={"name": scheduler, "warmup_steps": 1},
        training={"max_steps": 3, "batch_size": 4, "eval_every": 1},
        data={"validation_split": 0.25},
    )
    rep = MemoryReporter()
    result = run(spec, model_dir, ROWS, None, tmp_path, rep)
    assert result.steps == 3
    lrs = [p["learning_rate"] for p in rep.points if "loss" in p]
    assert len(lrs) == 3 and all(lr > 0 for lr in lrs)
    if scheduler != "reduce_on_plateau":
        assert lrs[0] < lrs[1]  # the warmup step really used a lower rate


@pytest.mark.parametrize(
    "quantization",
    [{"bits": 4, "quant_type": "fp4", "double_quant": False}, {"bits": 8}, {"bits": None}],
    ids=["4bit-fp4", "8bit", "none"],
)
def test_quantization_choices_train(model_dir: Path, tmp_path: Path, quantization: dict[str, Any]) -> None:
    rep = MemoryReporter()
    spec = make_spec(quantization=quantization, training={"max_steps": 6, "batch_size": 4, "learning_rate": 1e-2})
    run(spec, model_dir, shakespeare_rows(24), None, tmp_path, rep)
    losses = [p["loss"] for p in rep.points if "loss" in p]
    assert losses[-1] < losses[0]
    assert any(describe in msg for _, msg, _ in rep.events for describe in ("fp4", "8-bit", "no quantization"))

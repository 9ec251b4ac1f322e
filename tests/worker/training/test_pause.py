"""A pause checkpoints at the step it is seen, whatever `save_every` says, and the next run
continues from there exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import make_spec, shakespeare_rows
from tuneforge.contract.status import StopReason
from tuneforge.worker.training.checkpoints import latest_complete
from tuneforge.worker.training.errors import StopTraining
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run


def test_pause_saves_off_schedule_and_resumes_exactly(model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(training={"batch_size": 8, "learning_rate": 1e-2, "max_steps": 6, "save_every": 5})
    rows = shakespeare_rows(40)
    straight = run(spec, model_dir, rows, None, tmp_path / "a", MemoryReporter())

    with pytest.raises(StopTraining) as info:
        run(spec, model_dir, rows, None, tmp_path / "b", MemoryReporter(stop_at_step=2, stop_reason=StopReason.PAUSED))
    assert info.value.reason == StopReason.PAUSED
    assert latest_complete(tmp_path / "b" / "checkpoints").name == "step-00000002"  # type: ignore[union-attr]
    rep = MemoryReporter()
    resumed = run(spec, model_dir, rows, None, tmp_path / "b", rep)
    assert [p["step"] for p in rep.points if "loss" in p] == [3, 4, 5, 6]

    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)

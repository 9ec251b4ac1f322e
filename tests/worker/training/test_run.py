from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import ROOT, make_spec, shakespeare_rows
from tuneforge.worker.training.checkpoints import latest_complete, sha256_of
from tuneforge.worker.training.errors import StopTraining, TrainingError
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

FAST = {"batch_size": 8, "learning_rate": 1e-2}


def losses(rep: MemoryReporter) -> list[float]:
    return [p["loss"] for p in rep.points if p.get("loss") is not None]


def test_qlora_learns_only_the_adapter_changes_and_reloads(model_dir: Path, tmp_path: Path) -> None:
    weights = model_dir / "model.safetensors"
    before = sha256_of(weights)
    spec = make_spec(training={**FAST, "max_steps": 24}, lora={"dropout": 0.0})
    rep = MemoryReporter()
    result = run(spec, model_dir, shakespeare_rows(80), None, tmp_path, rep)

    curve = losses(rep)
    assert len(curve) == 24
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.05, curve
    assert all(
        p["learning_rate"] > 0 and p["grad_norm"] >= 0 and p["tokens_per_second"] > 0 for p in rep.points if "loss" in p
    )

    # Only LoRA weights are saved, they moved away from their zero init, and the base is untouched.
    adapter = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())
    assert sha256_of(weights) == before
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["r"] == 16
    assert set(result.manifest) >= {"adapter_config.json", "adapter_model.safetensors"}

    # A fresh process loading base + adapter reproduces the held-out loss the run measured.
    script = f"""
import json, sys
from pathlib import Path
import torch
from peft import PeftModel
from tuneforge.contract.spec import JobSpec
from tests.helpers import shakespeare_rows
from tuneforge.worker.training.configs import pick_device
from tuneforge.worker.training.data import encode_causal, make_splits
from tuneforge.worker.training.model import load_model, load_tokenizer
from tuneforge.worker.training.evaluation import evaluate
spec = JobSpec.model_validate_json(sys.argv[1])
model_dir = Path({str(model_dir)!r})
tok = load_tokenizer(model_dir)
model, _ = load_model(model_dir, spec, pick_device())
base_loss = evaluate(model, encode_causal(make_splits(shakespeare_rows(80), None, spec).validation, tok, spec),
                     spec, tok.pad_token_id, pick_device(), None)["eval_loss"]
model = PeftModel.from_pretrained(model, {str(result.adapter_dir)!r})
val = encode_causal(make_splits(shakespeare_rows(80), None, spec).validation, tok, spec)
print(json.dumps({{"adapted": evaluate(model, val, spec, tok.pad_token_id, pick_device(), None)["eval_loss"],
                  "base": base_loss}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script, spec.model_dump_json()], cwd=ROOT, capture_output=True, text=True, check=True
    )
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert reloaded["adapted"] == pytest.approx(result.final_metrics["validation"]["eval_loss"], abs=1e-4)
    assert reloaded["adapted"] < reloaded["base"]


@pytest.mark.parametrize(
    "rows",
    [
        [{"prompt": f"Q{i}: who speaks?", "completion": " The citizen speaks."} for i in range(16)],
        [
            {"messages": [{"role": "user", "content": f"Line {i}?"}, {"role": "assistant", "content": "Speak, speak."}]}
            for i in range(16)
        ],
    ],
    ids=["prompt_completion", "messages"],
)
def test_other_causal_formats_train(model_dir: Path, tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    rep = MemoryReporter()
    result = run(make_spec(training={**FAST, "max_steps": 8}), model_dir, rows, None, tmp_path, rep)
    curve = losses(rep)
    assert curve[-1] < curve[0]
    assert result.steps == 8


def test_cancel_stops_within_a_step(model_dir: Path, tmp_path: Path) -> None:
    rep = MemoryReporter(stop_at_step=2, stop_reason="cancelled")  # type: ignore[arg-type]  # StopReason's value
    with pytest.raises(StopTraining) as info:
        run(make_spec(training={**FAST, "max_steps": 50}), model_dir, shakespeare_rows(40), None, tmp_path, rep)
    assert info.value.reason == "cancelled"
    assert rep.last_step == 2


def test_resume_from_checkpoint_matches_a_straight_run(model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(training={**FAST, "max_steps": 6, "save_every": 3})
    rows = shakespeare_rows(40)
    straight = run(spec, model_dir, rows, None, tmp_path / "a", MemoryReporter())

    with pytest.raises(StopTraining):
        run(spec, model_dir, rows, None, tmp_path / "b", MemoryReporter(stop_at_step=3))
    assert latest_complete(tmp_path / "b" / "checkpoints").name == "step-00000003"  # type: ignore[union-attr]
    rep = MemoryReporter()
    resumed = run(spec, model_dir, rows, None, tmp_path / "b", rep)
    assert any(msg == "Resumed from step 3 (attempt 1)" for _, msg, _ in rep.events)
    assert [p["step"] for p in rep.points if "loss" in p] == [4, 5, 6]

    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_missing_target_module_fails_with_the_field(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError) as info:
        run(
            make_spec(lora={"target_modules": ["query_key_value"]}),
            model_dir,
            shakespeare_rows(10),
            None,
            tmp_path,
            MemoryReporter(),
        )
    assert info.value.code == "invalid_spec"
    assert info.value.param == "lora.target_modules"
    assert "q_proj" in info.value.message


def test_nan_loss_fails_the_run(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny Llama's RMSNorm bounds its logits, so no learning rate makes its loss blow up on
    # demand; inject the NaN at the loss instead and check that the run stops on it.
    from tuneforge.worker.training.losses import TaskLoss

    real_call = TaskLoss.__call__
    calls = {"n": 0}

    def poisoned(self: TaskLoss, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        loss = real_call(self, model, batch)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(TaskLoss, "__call__", poisoned)
    with pytest.raises(TrainingError) as info:
        run(
            make_spec(training={**FAST, "max_steps": 10}),
            model_dir,
            shakespeare_rows(40),
            None,
            tmp_path,
            MemoryReporter(),
        )
    assert info.value.code == "nan_loss"
    assert "step 3" in info.value.message


def test_watchdog_exploding_and_disabled() -> None:
    from tuneforge.worker.training.controls import LossWatchdog

    dog = LossWatchdog(make_spec(training={"loss_watchdog": {"max_ratio": 4.0, "patience": 2}}).training.loss_watchdog)
    dog.check(2.0, 1)
    dog.check(9.0, 2)  # one bad step is tolerated
    dog.check(3.0, 3)
    dog.check(9.0, 4)
    with pytest.raises(TrainingError, match="exploded"):
        dog.check(9.5, 5)
    off = LossWatchdog(make_spec(training={"loss_watchdog": {"enabled": False}}).training.loss_watchdog)
    off.check(float("nan"), 1)


def test_resume_skips_incomplete_checkpoints(tmp_path: Path) -> None:
    """A crash mid-write leaves a .tmp-* folder or a folder without COMPLETE: neither is resumed."""
    root = tmp_path / "checkpoints"
    (root / "step-00000010").mkdir(parents=True)
    (root / "step-00000010" / "state.pt").write_bytes(b"")
    (root / "step-00000010" / "COMPLETE").write_text("{}")
    (root / "step-00000020").mkdir()
    (root / "step-00000020" / "state.pt").write_bytes(b"half written")
    (root / ".tmp-step-00000030-123").mkdir()
    assert latest_complete(root) == root / "step-00000010"

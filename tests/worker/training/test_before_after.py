"""What a run reports about what training changed: the step-0 baseline, "validation loss A → B",
and OpenAI's mean token accuracy in the series, the checkpoints and the final metrics."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import make_spec, shakespeare_rows
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run


def test_baseline_then_before_after_and_token_accuracy(model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(training={"batch_size": 8, "learning_rate": 1e-2, "max_steps": 12, "eval_every": 6})
    rep = MemoryReporter()
    result = run(spec, model_dir, shakespeare_rows(60), None, tmp_path, rep)

    evals = [p for p in rep.points if p.get("eval_loss") is not None]
    assert [p["step"] for p in evals] == [0, 6, 12]
    baseline = evals[0]
    assert baseline["extra"]["valid_mean_token_accuracy"] == baseline["extra"]["mean_token_accuracy"]
    assert 0.0 <= baseline["extra"]["valid_mean_token_accuracy"] <= 1.0
    train = [p for p in rep.points if p.get("loss") is not None]
    assert len(train) == 12 and all(0.0 <= p["extra"]["train_mean_token_accuracy"] <= 1.0 for p in train)
    # The tiny model learns: both loss and accuracy move the right way from the baseline.
    assert evals[-1]["eval_loss"] < baseline["eval_loss"]
    assert evals[-1]["extra"]["mean_token_accuracy"] > baseline["extra"]["mean_token_accuracy"]

    messages = [msg for _, msg, _ in rep.events]
    assert any(m.startswith("Baseline evaluation before training: eval_loss=") for m in messages)
    change = next(m for m in messages if m.startswith("Validation loss "))
    assert change == f"Validation loss {baseline['eval_loss']:.4f} → {evals[-1]['eval_loss']:.4f} (step 0 → step 12)"

    final = result.final_metrics
    assert final["validation_loss_change"] == {"before": baseline["eval_loss"], "after": evals[-1]["eval_loss"]}
    assert final["baseline"]["eval_loss"] == baseline["eval_loss"]
    assert final["train_mean_token_accuracy"] == train[-1]["extra"]["train_mean_token_accuracy"]
    ckpt_metrics = rep.checkpoint_metrics[-1]
    assert ckpt_metrics["valid_mean_token_accuracy"] == evals[-1]["extra"]["mean_token_accuracy"]
    assert ckpt_metrics["train_mean_token_accuracy"] == train[-1]["extra"]["train_mean_token_accuracy"]


def test_no_validation_split_means_no_baseline(model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(training={"batch_size": 8, "max_steps": 3}, data={"validation_split": 0.0, "test_split": 0.0})
    rep = MemoryReporter()
    result = run(spec, model_dir, shakespeare_rows(24), None, tmp_path, rep)
    assert not [p for p in rep.points if p.get("eval_loss") is not None]
    assert "baseline" not in result.final_metrics and "validation_loss_change" not in result.final_metrics

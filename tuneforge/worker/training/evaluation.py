"""Supervised training's held-out evaluation: loss and perplexity for causal LM, accuracy/F1 for
classification, MSE/MAE/R2 for regression (reported in the target's own units). Another training
method evaluates its own way (methods/)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.contract.spec import JobSpec
from tuneforge.worker.training.data import collate
from tuneforge.worker.training.encoded import IGNORE, Encoded, Example
from tuneforge.worker.training.lm_loss import causal_lm_loss


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: Encoded,
    spec: JobSpec,
    pad_id: int,
    device: torch.device,
    norm: tuple[float, float] | None,
) -> dict[str, Any]:
    model.eval()
    bs = max(1, spec.training.batch_size)
    if spec.task == "causal_lm":
        return _causal(model, data.examples, bs, pad_id, device)
    preds: list[Any] = []
    targets: list[Any] = []
    total_loss = 0.0
    for i in range(0, len(data.examples), bs):
        batch = {k: v.to(device) for k, v in collate(data.examples[i : i + bs], pad_id).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        if spec.task == "regression":
            out = logits.squeeze(-1)
            total_loss += float(F.mse_loss(out, labels.float(), reduction="sum"))
            preds += out.tolist()
        else:
            total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            preds += logits.argmax(-1).tolist()
        targets += labels.tolist()
    n = max(1, len(targets))
    if spec.task == "regression":
        assert norm is not None, "regression evaluation needs the label normalization"
        return {"eval_loss": total_loss / n, **regression_metrics(preds, targets, norm)}
    return {"eval_loss": total_loss / n, **classification_metrics(preds, targets, data.label_names)}


def _causal(
    model: torch.nn.Module, examples: Sequence[Example], bs: int, pad_id: int, device: torch.device
) -> dict[str, Any]:
    total_loss, total_targets, total_correct = 0.0, 0, 0
    for i in range(0, len(examples), bs):
        batch = {k: v.to(device) for k, v in collate(examples[i : i + bs], pad_id).items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        if n == 0:
            continue
        batch_loss, correct, _ = causal_lm_loss(model, batch)
        total_loss += float(batch_loss) * n
        total_targets += n
        total_correct += int(correct)
    loss = total_loss / max(1, total_targets)
    return {
        "eval_loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "mean_token_accuracy": total_correct / max(1, total_targets),
    }


def regression_metrics(preds: list[float], targets: list[float], norm: tuple[float, float]) -> dict[str, float]:
    """Metrics in the target's units: predictions and targets are de-normalized first."""
    n = max(1, len(targets))
    p = [v * norm[1] + norm[0] for v in preds]
    y = [v * norm[1] + norm[0] for v in targets]
    mean_y = sum(y) / n
    mse = sum((a - b) ** 2 for a, b in zip(p, y, strict=True)) / n
    var = sum((b - mean_y) ** 2 for b in y) / n
    return {
        "mse": mse,
        "mae": sum(abs(a - b) for a, b in zip(p, y, strict=True)) / n,
        "r2": 1.0 - mse / var if var > 0 else 0.0,
    }


def classification_metrics(preds: list[int], targets: list[int], names: list[str]) -> dict[str, Any]:
    n = max(1, len(targets))
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for k, name in enumerate(names):
        tp = sum(1 for p, y in zip(preds, targets, strict=True) if p == k and y == k)
        fp = sum(1 for p, y in zip(preds, targets, strict=True) if p == k and y != k)
        fn = sum(1 for p, y in zip(preds, targets, strict=True) if p != k and y == k)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
        f1s.append(f1)
    return {
        "accuracy": sum(1 for p, y in zip(preds, targets, strict=True) if p == y) / n,
        "macro_f1": sum(f1s) / max(1, len(f1s)),
        "per_class": per_class,
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))

"""The training loss of each task, with its options (class weights, label smoothing, Huber).

A new training method plugs in here, as a loss over its own batch shape; the loop does not change.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.data import Encoded
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.lm_loss import causal_lm_loss


class Loss(Protocol):
    """What the loop calls: the loss of one micro-batch, and any extra per-step metrics gathered
    since the last logging step (read once per logging step: one host sync)."""

    # The last micro-batch's (correct, counted) target tokens on the device, for token accuracy;
    # None for losses that do not predict tokens one by one (preference pairs).
    last_accuracy: tuple[torch.Tensor, torch.Tensor] | None

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def take_metrics(self) -> dict[str, float] | None: ...


def make_loss(spec: JobSpec, train: Encoded, device: torch.device) -> Loss:
    if spec.method == "dpo":
        from tuneforge.worker.training.preference import PreferenceLoss

        return PreferenceLoss(spec)
    return TaskLoss(spec, train, device)


class TaskLoss:
    def __init__(self, spec: JobSpec, train: Encoded, device: torch.device) -> None:
        self.task = spec.task
        self.opts = spec.training.loss
        self.weight = _class_weights(spec, train)
        if self.weight is not None:
            self.weight = self.weight.to(device)
        # The last causal-LM batch's (correct, counted) next tokens, on the device: the metric
        # window sums them into `train_mean_token_accuracy` without a host sync per step.
        self.last_accuracy: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.task == "causal_lm":
            # Logits only where a token is trained on, cross-entropy in chunks (lm_loss.py).
            loss, correct, counted = causal_lm_loss(model, batch)
            self.last_accuracy = (correct, counted)
            return loss
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        if self.task == "regression":
            pred = logits.squeeze(-1)
            if self.opts.regression_loss == "huber":
                return F.huber_loss(pred, labels.float(), delta=self.opts.huber_delta)
            return F.mse_loss(pred, labels.float())
        return F.cross_entropy(logits, labels, weight=self.weight, label_smoothing=self.opts.label_smoothing)

    def take_metrics(self) -> dict[str, float] | None:
        return None


def _class_weights(spec: JobSpec, train: Encoded) -> torch.Tensor | None:
    weights = spec.training.loss.class_weights
    if spec.task != "sequence_classification" or weights is None:
        return None
    n = len(train.label_names)
    if weights == "balanced":
        counts = torch.bincount(torch.tensor([int(ex["labels"]) for ex in train.examples]), minlength=n)
        return len(train.examples) / (n * counts.clamp(min=1).float())
    if len(weights) != n:
        raise TrainingError(
            ErrorCode.INVALID_SPEC,
            f"training.loss.class_weights has {len(weights)} weights for {n} classes ({', '.join(train.label_names)}).",
            "training.loss.class_weights",
        )
    return torch.tensor(weights, dtype=torch.float)

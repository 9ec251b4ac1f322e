"""Supervised training's loss for each task, with its options (class weights, label smoothing, Huber).

Another training method brings its own loss (methods/); the loop calls either through `Loss`
(methods/base.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.encoded import Encoded
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.lm_loss import causal_lm_loss


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

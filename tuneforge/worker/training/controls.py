"""What may stop a run on its own: early stopping on a stalled eval metric, and the loss watchdog
that fails a run whose loss is NaN or exploding."""

from __future__ import annotations

import math
from typing import Any

import torch
from peft.utils import get_peft_model_state_dict

from tuneforge.contract.spec import EarlyStoppingSpec, LossWatchdogSpec
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.errors import TrainingError


class EarlyStopping:
    """Tracks the best eval metric and a CPU copy of the adapter that reached it. With no
    early-stopping block it only remembers the best metric (checkpoints carry it)."""

    def __init__(self, spec: EarlyStoppingSpec | None) -> None:
        self.spec = spec
        self.best_metric = math.inf
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_evals = 0

    def restore(self, best_metric: float, best_step: int | None) -> None:
        self.best_metric, self.best_step = best_metric, best_step

    def should_stop(self, metric: float, step: int, model: torch.nn.Module) -> bool:
        """Record one evaluation; True once `patience` evaluations in a row failed to improve."""
        es = self.spec
        if es is None:
            return False
        if metric < self.best_metric - es.min_delta:
            self.best_metric, self.best_step, self.bad_evals = metric, step, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}
            return False
        self.bad_evals += 1
        return self.bad_evals >= es.patience

    def stop_event(self, step: int) -> tuple[str, dict[str, Any]]:
        assert self.spec is not None
        return (
            f"Early stopping at step {step}: {self.spec.metric} did not improve for {self.spec.patience} evaluations",
            {"step": step, "best_step": self.best_step},
        )


class LossWatchdog:
    def __init__(self, spec: LossWatchdogSpec) -> None:
        self.cfg = spec
        self.first: float | None = None
        self.bad = 0

    def check(self, loss: float, step: int) -> None:
        if not self.cfg.enabled:
            return
        if not math.isfinite(loss):
            raise TrainingError(
                ErrorCode.NAN_LOSS,
                f"The loss became {loss} at step {step}. Lower training.learning_rate, or set training.max_grad_norm.",
                "training.learning_rate",
            )
        if self.first is None:
            self.first = loss
            return
        self.bad = self.bad + 1 if loss > self.cfg.max_ratio * self.first else 0
        if self.bad >= self.cfg.patience:
            raise TrainingError(
                ErrorCode.NAN_LOSS,
                f"The loss exploded to {loss:.3g} at step {step} (over {self.cfg.max_ratio}x the first "
                f"loss {self.first:.3g}). Lower training.learning_rate.",
                "training.learning_rate",
            )

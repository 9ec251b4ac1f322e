"""The loop's position: everything training changes as it goes, and a checkpoint restores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    # Micro-batches of the current epoch already consumed: where a resumed attempt continues.
    micro_in_epoch: int = 0
    tokens_seen: int = 0
    last_loss: float | None = None
    last_train_accuracy: float | None = None
    last_eval: dict[str, Any] = field(default_factory=dict)
    # The step-0 evaluation, before any training: the "before" of the job's before -> after.
    baseline_eval: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False

    def position(self) -> dict[str, int]:
        """What a checkpoint stores of the state (the rest is recomputed or re-measured)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "micro_in_epoch": self.micro_in_epoch,
            "tokens_seen": self.tokens_seen,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.step, self.epoch = saved["step"], saved["epoch"]
        self.micro_in_epoch, self.tokens_seen = saved["micro_in_epoch"], saved["tokens_seen"]

    def checkpoint_metrics(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "train_loss": self.last_loss,
            "valid_loss": self.last_eval.get("eval_loss"),
            "train_mean_token_accuracy": self.last_train_accuracy,
            "valid_mean_token_accuracy": self.last_eval.get("mean_token_accuracy"),
        }

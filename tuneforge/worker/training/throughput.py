"""The metric point of a logging step, measured over a window of steps.

The loss is summed on the device and read once per logging step (the only host sync of a step).
Windows are contiguous: the logging itself, the reporter and any cancel check count in the next
window, while time spent evaluating and checkpointing is subtracted, so tokens/s is the loop's rate.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class MetricWindow:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.counted = torch.zeros((), device=self.device, dtype=torch.long)
        self.micro = 0
        self.tokens = 0
        self.t0 = now
        self.paused = 0.0

    def add(self, loss: torch.Tensor, tokens: int) -> None:
        """One micro-batch's (already accumulation-scaled) loss and its real tokens."""
        self.loss += loss.detach()
        self.tokens += tokens

    def add_accuracy(self, correct: torch.Tensor, counted: torch.Tensor) -> None:
        """One micro-batch's correctly predicted and counted target tokens (causal LM)."""
        self.correct += correct
        self.counted += counted

    def end_step(self) -> None:
        self.micro += 1

    def pause(self, seconds: float) -> None:
        self.paused += seconds

    def point(self, step: int, epoch: float, lr: float, grad_norm: float, tokens_seen: int) -> dict[str, Any]:
        now = time.perf_counter()
        elapsed = now - self.t0 - self.paused
        # One host sync for the whole point: the loss and the token counts together.
        loss_sum, correct, counted = torch.stack(
            (self.loss.float(), self.correct.float(), self.counted.float())
        ).tolist()
        loss = loss_sum / self.micro
        point = {
            "step": step,
            "epoch": round(epoch, 4),
            "loss": loss,
            "learning_rate": lr,
            "grad_norm": grad_norm,
            "tokens_per_second": self.tokens / elapsed if elapsed > 0 else None,
            "num_tokens": tokens_seen,
        }
        if counted:
            point["extra"] = {"train_mean_token_accuracy": correct / counted}
        self._reset(now)
        return point

"""Spec -> optimizer and learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from tuneforge.contract.spec import OptimizerSpec, SchedulerSpec

Scheduler = LambdaLR | ReduceLROnPlateau


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: biases and norm weights (1-D parameters) are not decayed."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(spec: OptimizerSpec, groups: Iterable[dict[str, Any]], lr: float) -> Optimizer:
    groups = list(groups)
    match spec.name:
        case "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov)
        case "adagrad":
            return torch.optim.Adagrad(groups, lr=lr, eps=spec.eps, lr_decay=spec.lr_decay)
        case "rmsprop":
            return torch.optim.RMSprop(
                groups, lr=lr, alpha=spec.alpha, momentum=spec.momentum, eps=spec.eps, centered=spec.centered
            )
        case "adam":
            # Adam's own weight_decay is L2 in the gradient, not decoupled: that is what "adam" means.
            return torch.optim.Adam(groups, lr=lr, betas=spec.betas, eps=spec.eps)
        case "adamw":
            return torch.optim.AdamW(groups, lr=lr, betas=spec.betas, eps=spec.eps)
        case "adamw_8bit" | "paged_adamw_8bit" | "paged_adamw_32bit":
            import bitsandbytes.optim as bnb_optim

            cls = {
                "adamw_8bit": bnb_optim.AdamW8bit,
                "paged_adamw_8bit": bnb_optim.PagedAdamW8bit,
                "paged_adamw_32bit": bnb_optim.PagedAdamW32bit,
            }[spec.name]
            return cls(groups, lr=lr, betas=spec.betas, eps=spec.eps)
    raise ValueError(f"unknown optimizer {spec.name}")  # pragma: no cover - the spec's Literal forbids it


def warmup_steps(spec: SchedulerSpec, total_steps: int) -> int:
    if spec.warmup_steps is not None:
        return min(spec.warmup_steps, total_steps)
    if spec.warmup_ratio is not None:
        return math.ceil(spec.warmup_ratio * total_steps)
    return 0


def lr_factor(spec: SchedulerSpec, step: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at `step` (0-based count of completed steps)."""
    warm = warmup_steps(spec, total_steps)
    if step < warm:
        return (step + 1) / (warm + 1)
    floor = spec.min_lr_ratio
    span = max(1, total_steps - warm)
    progress = min(1.0, (step - warm) / span)
    match spec.name:
        case "constant" | "reduce_on_plateau":
            return 1.0
        case "linear":
            shape = 1.0 - progress
        case "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        case "cosine_with_restarts":
            cycle = (progress * spec.num_cycles) % 1.0 if progress < 1.0 else 1.0
            shape = 0.5 * (1.0 + math.cos(math.pi * cycle))
        case "polynomial":
            shape = (1.0 - progress) ** spec.power
        case "inverse_sqrt":
            shape = 1.0 / math.sqrt(1.0 + (step - warm))
        case _:  # pragma: no cover
            raise ValueError(spec.name)
    return floor + (1.0 - floor) * shape


def build_scheduler(spec: SchedulerSpec, optimizer: Optimizer, total_steps: int) -> Scheduler:
    if spec.name == "reduce_on_plateau":
        min_lr = [g["lr"] * spec.min_lr_ratio for g in optimizer.param_groups]
        return ReduceLROnPlateau(optimizer, mode="min", factor=spec.factor, patience=spec.patience, min_lr=min_lr)
    return LambdaLR(optimizer, lambda step: lr_factor(spec, step, total_steps))


def scheduler_step_per_batch(scheduler: Scheduler) -> None:
    if isinstance(scheduler, LambdaLR):
        scheduler.step()


def scheduler_step_on_eval(scheduler: Scheduler, eval_loss: float) -> None:
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(eval_loss)

"""LoRA dropout that keeps a 1-byte mask for the backward pass instead of a 4-byte one, on the CPU.

On a CPU, `torch.nn.functional.dropout` draws a float noise tensor (`bernoulli_`, then divided by the
keep probability), multiplies, and autograd keeps that fp32 noise for the backward pass: as large as
the activation itself. peft applies a separate dropout before each adapted layer (7 per Llama block
with `all-linear`), so for SmolLM2 these masks were a fifth of everything a training step saves.
`MaskDropout` draws the same noise with the same generator calls and computes the same product (so
results are bit-identical), but saves the mask as bool and rebuilds the noise in backward.
On a GPU, dropout already runs a fused kernel that saves a bool mask: nothing is replaced there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _MaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        # As ATen's CPU dropout: noise = bernoulli(1 - p) / (1 - p); out = x * noise.
        noise = torch.empty_like(x).bernoulli_(1 - p)
        keep = noise.bool()
        noise.div_(1 - p)
        ctx.p = p
        ctx.save_for_backward(keep)
        return x * noise

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep.to(grad.dtype).div_(1 - ctx.p), None


class MaskDropout(nn.Dropout):
    """`nn.Dropout` (same `p`, no parameters or state) whose backward keeps a bool mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.numel() == 0 or not torch.is_grad_enabled():
            return super().forward(x)
        if self.p == 1.0 or self.inplace:
            return super().forward(x)
        out: torch.Tensor = _MaskDropout.apply(x, self.p)
        return out


def compact_lora_dropout(model: nn.Module, device: torch.device) -> int:
    """Swap peft's LoRA dropout modules for `MaskDropout` on a CPU; returns how many were swapped.
    They hold no weights, so the adapter's files do not change."""
    if device.type != "cpu":
        return 0
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is nn.Dropout and dropout.p > 0.0:
                dropouts[name] = MaskDropout(dropout.p)
                swapped += 1
    return swapped

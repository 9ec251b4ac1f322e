"""Data parallelism across N processes (one per device) with torch.distributed: gloo on the CPU,
NCCL on GPUs.

The launcher (`tuneforge/worker/ddp.py`) starts ranks 1..N-1 as subprocesses and runs rank 0 in the worker
itself, each with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set. The engine then:

- splits every micro-batch of the spec's `batch_size` across the ranks (rank r takes examples
  r, r+N, ...), so per-device batch x devices x accumulation = the spec's global batch, and the
  batch order is the one a single process would use;
- sums gradients, the step's loss and its token count in one all-reduce per optimizer step and
  averages over the ranks that had examples (the gradient all-reduce DistributedDataParallel does,
  written out for the trainable parameters only, so the peft model needs no wrapper);
- broadcasts rank 0's stop request (cancel, lease lost, shutdown) each step, so every rank stops at
  the same step;
- lets rank 0 alone report, checkpoint and publish; the others use a `SilentReporter`.

QLoRA on GPUs: each rank loads its quantized base model onto its own device (`device_map={"": local
rank}`, as axolotl PR #3839 does), never `device_map="auto"`, which would spread one copy over all.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tuneforge.contract.status import EventLevel, StopReason

_REASONS = list(StopReason)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init(timeout_seconds: float) -> None:
    """Join the process group the launcher's environment describes (no-op without WORLD_SIZE>1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: list[int]) -> list[int]:
    """This rank's examples of one micro-batch."""
    return indices[rank() :: world_size()]


def sync_params(model: torch.nn.Module) -> None:
    """Rank 0's trainable weights on every rank (after setup and resume)."""
    for p in model.parameters():
        if p.requires_grad:
            dist.broadcast(p.data, src=0)


def all_reduce_step(
    model: torch.nn.Module, loss: torch.Tensor, tokens: int, contributed: bool
) -> tuple[torch.Tensor, int]:
    """Average the gradients over the ranks that had examples this step (an epoch's short last
    micro-batch can leave a rank without any); return the step's mean loss and total tokens."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    device = grads[0].device
    extra = torch.stack(
        [
            loss.detach().float().to(device),
            torch.tensor(float(tokens), device=device),
            torch.tensor(float(contributed), device=device),
        ]
    )
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [extra])
    dist.all_reduce(flat)
    offset = sum(g.numel() for g in grads)
    n = max(float(flat[offset + 2]), 1.0)
    start = 0
    for p, g in zip(params, grads, strict=True):
        size = g.numel()
        p.grad = (flat[start : start + size] / n).view_as(p).to(p.dtype)
        start += size
    return flat[offset] / n, round(float(flat[offset + 1]))


def agree_on_stop(reason: StopReason | None, device: torch.device) -> StopReason | None:
    """Rank 0's stop request, on every rank."""
    code = torch.tensor([0 if reason is None else _REASONS.index(reason) + 1], device=device)
    dist.broadcast(code, src=0)
    value = int(code.item())
    return None if value == 0 else _REASONS[value - 1]


class SilentReporter:
    """Ranks other than 0 report nothing: rank 0 speaks for the job."""

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        pass

    def metrics(self, point: dict[str, Any]) -> None:
        pass

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        pass

    def checkpoint(self, step: int, path: Path, manifest: dict[str, str], metrics: dict[str, Any]) -> None:
        pass

    def samples(self, step: int, items: list[dict[str, Any]]) -> None:
        pass

    def stop_requested(self) -> StopReason | None:
        return None

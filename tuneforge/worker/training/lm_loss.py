"""The causal-LM loss and token accuracy, without full-vocabulary fp32 logits.

The plain route (`model(**batch, labels=...)`) computes the output head at every position, upcasts
those logits to fp32 and keeps a fp32 log-softmax for the backward pass: per position, 10 bytes per
vocabulary entry in the forward pass and about 14 in the backward pass. For SmolLM2 (49,152 tokens)
at batch 8 x 256 that is 1-1.4 GB of a CPU job's peak, more than the whole 4-bit model.

Here:
- the head runs only at the positions whose next token is trained on (a pre-hook selects them), so
  a chat row whose loss is on a one-word answer costs a few logit rows, not one per prompt token;
- the cross-entropy reads those logits in chunks of rows: fp32 exists for one chunk at a time, and
  the backward pass recomputes each chunk's softmax from the saved 16-bit logits instead of
  keeping a fp32 copy. Peak extra memory: the logits and their gradient, in the head's dtype.

The loss is the mean over target tokens, as transformers' `ForCausalLMLoss` (equal up to fp32
summation order: `test_lm_loss.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from tuneforge.worker.training.encoded import IGNORE

# fp32 elements of one chunk of logits (32 MiB): big enough that the loop is a few iterations.
CHUNK_ELEMENTS = 1 << 23


def causal_lm_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over the trained-on tokens of a collated batch, and the
    (correct, counted) next-token predictions among them, as device tensors (no host sync)."""
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    targets = target[keep]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with head_at(model, keep):
        logits = model(**inputs).logits  # (targets, vocab): only the rows that carry loss
    counted = keep.sum()
    if targets.numel() == 0:
        return logits.sum() * 0.0, counted * 0, counted
    loss, correct = ChunkedCrossEntropy.apply(logits, targets)
    return loss, correct, counted


@contextmanager
def head_at(model: torch.nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """While open, the output head sees only the hidden states of positions `keep` (B, T-1) marks:
    the model's own forward still runs the head (with its casts and any logit scaling), on fewer rows."""
    # A transformers model, or a peft model (which forwards the call to its base model).
    head = model.get_output_embeddings()  # type: ignore[operator]
    if head is None:
        raise ValueError("the model has no output head to compute the causal-LM loss with")

    def select(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][:, :-1][keep], *args[1:])

    # Prepended: runs before the head's own pre-hooks (the dtype cast), so they see fewer rows too.
    handle = head.register_forward_pre_hook(select, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def _chunks(rows: int, vocab: int) -> Iterator[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, vocab))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (N, V) logits against (N,) targets, and the count of argmax hits.
    Saves the logits (in their own dtype) and recomputes each chunk's softmax in backward."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        correct = torch.zeros((), dtype=torch.long, device=logits.device)
        for rows in _chunks(*logits.shape):
            x = logits[rows].float()
            t = targets[rows]
            total += (torch.logsumexp(x, dim=-1) - x.gather(1, t[:, None]).squeeze(1)).sum()
            correct += (x.argmax(-1) == t).sum()
        ctx.save_for_backward(logits, targets)
        ctx.mark_non_differentiable(correct)
        return total / logits.shape[0], correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_correct: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets = ctx.saved_tensors
        scale = grad_loss.float() / logits.shape[0]
        grad = torch.empty_like(logits)
        for rows in _chunks(*logits.shape):
            # d(mean CE)/d logits = (softmax - one_hot(target)) / N, in fp32, then the logits' dtype.
            p = torch.softmax(logits[rows].float(), dim=-1)
            p[torch.arange(p.shape[0], device=p.device), targets[rows]] -= 1.0
            grad[rows] = p.mul_(scale).to(grad.dtype)
        return grad, None

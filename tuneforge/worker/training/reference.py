"""The reference policy that preference (DPO) and reinforcement (GRPO) training measure against.

A new adapter starts as the base (LoRA's B is zero), so "the base with the adapter switched off" is the
policy training started from, at no cost in memory: that is the reference. A job that starts from an
earlier adapter (`from_checkpoint`, a warm start) starts from that adapter instead, and the base is not
where it started: a reinforcement job warm-started from a supervised SMS classifier was pulled toward a
base that never answers "spam" or "ham" by its KL term (which is most of the gradient when groups carry no
signal), and went from 90% to 50% held-out accuracy in 12 steps (docs/benchmarks.md). So a warm start
keeps the adapter it started from as a second, frozen adapter named `reference` (trl's
`ref_adapter_name` does the same), and the reference pass switches to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import PeftModel, set_peft_model_state_dict

TRAINED = "default"  # peft's name for the adapter get_peft_model made: the one being trained and saved
REFERENCE = "reference"


def keep_as_reference(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Add `state` (the starting adapter's weights) as the frozen reference adapter; training goes on
    with the trained one active."""
    assert isinstance(model, PeftModel), "a reference adapter needs a peft model"
    model.add_adapter(REFERENCE, model.peft_config[TRAINED])
    set_peft_model_state_dict(model, state, adapter_name=REFERENCE)
    _train_only_the_trained(model)


@contextmanager
def reference_policy(model: torch.nn.Module) -> Iterator[None]:
    """Within the block the model is the reference policy: the starting adapter of a warm start, else the
    base (the adapter off). Call it under `torch.no_grad()`."""
    if REFERENCE not in getattr(model, "peft_config", {}):
        with model.disable_adapter():  # type: ignore[operator]
            yield
        return
    model.set_adapter(REFERENCE)  # type: ignore[operator]
    try:
        yield
    finally:
        _train_only_the_trained(model)


def _train_only_the_trained(model: torch.nn.Module) -> None:
    """The trained adapter active and trainable, the reference frozen (peft's `set_adapter` marks the
    active adapter's weights trainable and the others frozen)."""
    model.set_adapter(TRAINED)  # type: ignore[operator]
    for name, param in model.named_parameters():
        if f".{REFERENCE}." in name:
            param.requires_grad_(False)

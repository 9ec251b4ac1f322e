"""Sample generations: a few prompts the worker completes greedily before, during and after training."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from contract.spec.base import Strict


class SamplesSpec(Strict):
    """causal_lm only. The worker generates greedily from these prompts with the adapter before the first
    step (step 0), at each evaluation and at the end, so "base said X, step 200 says Y" can be read from
    `GET /v1/fine_tuning/jobs/{id}/samples`."""

    prompts: list[Annotated[str, Field(min_length=1, max_length=4000)]] = Field(
        default_factory=list,
        max_length=8,
        description="Prompts to complete, as raw text (no chat template applied). At most 8.",
    )
    # Off by default for now: greedy generation without a KV cache costs about 0.1 s per token on the
    # CPU with a 4-bit model, which would lengthen every short job; see docs/training.md.
    from_validation: int = Field(
        0,
        ge=0,
        le=8,
        description="Also take this many prompts from the validation split: a chat row's conversation up to "
        "its last assistant turn (chat template, with a generation prompt), a prompt/completion row's prompt, "
        "or the first half of a text row. 0 (the default) takes none.",
    )
    max_new_tokens: int = Field(16, ge=1, le=256, description="Greedy tokens generated per prompt.")

"""Sample generations: a few prompts the worker completes greedily before, during and after training."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tuneforge.contract.spec.base import Strict


class SamplesSpec(Strict):
    """causal_lm only. The worker generates greedily from these prompts with the adapter before the first
    step (step 0), at each evaluation and at the end, so "base said X, step 200 says Y" can be read from
    `GET /v1/fine_tuning/jobs/{id}/samples`."""

    prompts: list[Annotated[str, Field(min_length=1, max_length=4000)]] = Field(
        default_factory=list,
        max_length=8,
        description="Prompts to complete, as raw text (no chat template applied). At most 8.",
    )
    # Two by default (supervised causal_lm): greedy generation with a KV cache costs about 0.13 s of CPU
    # per token on SmolLM2-135M in 4-bit (bitsandbytes dequantizes every weight at each token), so two
    # prompts of 16 tokens add a few seconds per evaluation on a CPU and far less on a GPU.
    from_validation: int = Field(
        2,
        ge=0,
        le=8,
        description="Also take this many prompts from the validation split (supervised jobs with one): a chat "
        "row's conversation up to its last assistant turn (chat template, with a generation prompt), a "
        "prompt/completion row's prompt, or the first half of a text row. 0 takes none.",
    )
    max_new_tokens: int = Field(16, ge=1, le=256, description="Greedy tokens generated per prompt.")

"""Reinforcement fine-tuning (`method.type = reinforcement`): the grader, and the algorithm's knobs
(GRPO, Shao et al. 2024, "DeepSeekMath"): a group of sampled completions per prompt, rewards
normalised within the group, a clipped policy-gradient step and a KL term toward the base.

The defaults are the ones that work on a small model on a CPU or one GPU, and where they come from:
4 completions per prompt (trl's GRPO examples use 4 to 16; fewer makes "all equal, no signal" groups
common, more multiplies generation, the dominant cost), temperature 1.0 (trl's default: the policy's
own distribution, so the ratio and the KL are computed against what was sampled), a KL coefficient of
0.04 (DeepSeekMath's), a clip range of 0.2 (PPO's and GRPO's), and per-token loss aggregation
(DAPO, Yu et al. 2025, trl's default: long completions are not down-weighted per token).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tuneforge.contract.graders.shapes import Grader, leaves, templates
from tuneforge.contract.graders.template import TemplateError, check_template
from tuneforge.contract.spec.base import SpecError, Strict

LossAggregation = Literal["token", "sequence"]
ResponseFormat = Literal["text", "json_object"]


class ReinforcementSpec(Strict):
    grader: Grader | None = Field(
        None, description="The grader (OpenAI's `method.reinforcement.grader`); required for method.type=reinforcement."
    )
    generations_per_prompt: int = Field(
        4, ge=2, le=64, description="Completions sampled per prompt: the group whose rewards are normalised together."
    )
    temperature: float = Field(1.0, gt=0.0, le=2.0, description="Sampling temperature of the completions.")
    max_new_tokens: int = Field(32, ge=1, le=2048, description="Longest completion sampled, in tokens.")
    kl_coef: float = Field(
        0.04,
        ge=0.0,
        le=10.0,
        description="Weight of the KL term toward the reference: the base (the adapter off), or the adapter a "
        "`from_checkpoint` job started from.",
    )
    clip_epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="The probability ratio is clipped to 1 +- this.")
    loss_aggregation: LossAggregation = Field(
        "token",
        description="`token`: the mean over every completion token of the batch (DAPO). `sequence`: each "
        "completion's token mean, then the mean over completions (the GRPO paper).",
    )
    eval_samples: int = Field(
        16, ge=1, le=1000, description="Validation prompts completed greedily and graded at each evaluation."
    )
    response_format: ResponseFormat = Field(
        "text",
        description="`json_object`: the completion is parsed as JSON for `{{sample.output_json}}`; one that "
        "does not parse scores 0 (`sample_parse_error`).",
    )

    @model_validator(mode="after")
    def _check_templates(self) -> ReinforcementSpec:
        if self.grader is None:
            return self
        for path, g in leaves(self.grader):
            for field, text in templates(g):
                try:
                    check_template(text)
                except TemplateError as exc:
                    raise SpecError(f"{path}.{field}", str(exc)) from exc
        return self

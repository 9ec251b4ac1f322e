"""Bodies and answers of the graders endpoints, in OpenAI's shapes (`openai.types.fine_tuning.alpha`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from tuneforge.contract.graders.shapes import Grader
from tuneforge.contract.spec import Strict


class GraderValidateRequest(Strict):
    grader: Grader


class GraderValidateResponse(BaseModel):
    grader: dict[str, Any]


class GraderRunRequest(Strict):
    grader: Grader
    model_sample: str = Field(max_length=1_000_000, description="The completion to grade: `{{sample.output_text}}`.")
    item: dict[str, Any] | None = Field(None, description="The dataset row: `{{item.<field>}}`.")


class GraderRunMetadata(BaseModel):
    name: str
    type: str
    errors: dict[str, Any]
    execution_time: float
    scores: dict[str, Any]
    sampled_model_name: str | None = None
    token_usage: int | None = None


class GraderRunResponse(BaseModel):
    reward: float
    sub_rewards: dict[str, Any]
    metadata: GraderRunMetadata
    model_grader_token_usage_per_model: dict[str, Any] = Field(default_factory=dict)

"""Where the data comes from: column names, splits and shuffling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tuneforge.contract.formats import Fields
from tuneforge.contract.spec.augmentation import AugmentationSpec
from tuneforge.contract.spec.base import SpecError, Strict

DataFormat = Literal["auto", "jsonl", "csv", "messages", "alpaca", "sharegpt", "prompt_completion", "text"]


class DataSpec(Strict):
    format: DataFormat = Field(
        "auto",
        description="The rows' shape: `messages` (OpenAI chat, with tools and weights), `alpaca` (instruction, "
        "input, output, system, history), `sharegpt` (conversations of {from, value}), `prompt_completion` or "
        "`text`. `auto` (or `jsonl`/`csv`, the file encodings, also detected) detects it per row from its keys.",
    )
    text_field: str = Field("text", description="Plain-text column (causal_lm) or input (classification).")
    prompt_field: str = Field("prompt", description="Prompt column of prompt/completion data.")
    completion_field: str = Field("completion", description="Completion column of prompt/completion data.")
    messages_field: str = Field("messages", description="Chat column: a list of {role, content}.")
    label_field: str = Field("label", description="Label (classification) or target (regression) column.")
    validation_split: float | None = Field(
        None, ge=0.0, lt=1.0, description="Held out for evaluation when no validation_file (default 0.1)."
    )
    test_split: float = Field(0.0, ge=0.0, lt=1.0, description="Held out for a final test evaluation.")
    shuffle_seed: int | None = Field(None, ge=0, description="Seed of the split and shuffle (default: the job seed).")
    augmentation: AugmentationSpec | None = Field(None, description="Optional; see `data.augmentation`.")

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if (self.validation_split or 0.0) + self.test_split >= 1.0:
            raise SpecError("test_split", "validation_split + test_split must be below 1")
        return self


def data_fields(d: DataSpec) -> Fields:
    return Fields(messages=d.messages_field, prompt=d.prompt_field, completion=d.completion_field, text=d.text_field)

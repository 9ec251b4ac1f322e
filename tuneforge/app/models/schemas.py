"""`model` objects in OpenAI's shape, with Tuneforge's fields beside them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # Tuneforge additions
    kind: Literal["base", "fine_tuned"]
    architecture: str | None = None
    parameters: int | None = Field(None, description="Stored parameters (base model; tied weights once).")
    context_length: int | None = None
    chat_template: bool = False
    base_model: str | None = Field(None, description="For a fine-tuned model: the base it was trained from.")
    fine_tuning_job_id: str | None = None
    step_number: int | None = Field(None, description="For a checkpoint id: its step.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
    has_more: bool = False

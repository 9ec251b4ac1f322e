"""The resolved job spec: every block, with defaults filled in. Stored on the job; the worker trains from it."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from tuneforge.contract.formats import CHAT_SHAPES
from tuneforge.contract.spec.base import SpecError, Strict, set_to_non_default
from tuneforge.contract.spec.blocks import LoraSpec, QuantizationSpec, TrainingSpec
from tuneforge.contract.spec.data import DataSpec
from tuneforge.contract.spec.integrations import Integration
from tuneforge.contract.spec.method import (
    METHOD_RULES,
    MethodName,
    RowShape,
    check_method,
    check_option_blocks,
    check_required,
)
from tuneforge.contract.spec.optim import AdamWSpec, OptimizerSpec, SchedulerSpec
from tuneforge.contract.spec.preference import PreferenceSpec
from tuneforge.contract.spec.reinforcement import ReinforcementSpec
from tuneforge.contract.spec.samples import SamplesSpec

TaskName = Literal["causal_lm", "sequence_classification", "regression"]


def _check_task_options(task: str, training: TrainingSpec, data: DataSpec) -> None:
    loss = training.loss
    if task != "sequence_classification":
        for name in ("class_weights", "label_smoothing"):
            if set_to_non_default(loss, name):
                raise SpecError(f"training.loss.{name}", f"`{name}` applies to sequence_classification only")
    if task != "regression":
        for name in ("regression_loss", "huber_delta"):
            if set_to_non_default(loss, name):
                raise SpecError(f"training.loss.{name}", f"`{name}` applies to regression only")
    if task != "causal_lm" and training.packing:
        raise SpecError("training.packing", "packing applies to causal_lm only")
    if task != "causal_lm" and data.format in (*CHAT_SHAPES, "prompt_completion"):
        raise SpecError("data.format", f"format `{data.format}` applies to causal_lm only")


class SpecBlocks(Strict):
    """Tuneforge's extension blocks, shared by the request (`JobCreate`) and the resolved `JobSpec`."""

    task: TaskName = Field("causal_lm", description="What the adapter learns.")
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    optimizer: OptimizerSpec = Field(default_factory=lambda: AdamWSpec(name="adamw"))
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    preference: PreferenceSpec = Field(
        default_factory=PreferenceSpec, description="Preference tuning options, for method.type=dpo."
    )
    reinforcement: ReinforcementSpec = Field(
        default_factory=ReinforcementSpec,
        description="Reinforcement fine-tuning's algorithm (GRPO) and grader, for method.type=reinforcement.",
    )
    samples: SamplesSpec = Field(
        default_factory=SamplesSpec,
        description="causal_lm: prompts generated from greedily before training, at each evaluation and at the end.",
    )
    integrations: list[Integration] = Field(
        default_factory=list,
        max_length=5,
        description="Experiment trackers the worker logs the metric series, hyperparameters and final metrics to: "
        "OpenAI's `wandb`, and `mlflow`; at most one of each. A tracker that is down never fails or slows the job.",
    )

    @field_validator("integrations", mode="before")
    @classmethod
    def _null_is_none(cls, value: object) -> object:
        return [] if value is None else value  # OpenAI's SDK and clients may send `integrations: null`

    @field_validator("integrations")
    @classmethod
    def _one_of_each(cls, value: list[Integration]) -> list[Integration]:
        seen: set[str] = set()
        for i, item in enumerate(value):
            if item.type in seen:
                raise SpecError(str(i), f"at most one {item.type} integration per job")
            seen.add(item.type)
        return value

    @model_validator(mode="after")
    def _check_task(self) -> Self:
        _check_task_options(self.task, self.training, self.data)
        if self.task != "causal_lm" and "samples" in self.model_fields_set and self.samples != SamplesSpec():
            raise SpecError("samples", "sample generations apply to causal_lm only")
        return self


class JobSpec(SpecBlocks):
    """The resolved spec a worker trains from. Stored on the job as `spec`."""

    seed: int = Field(ge=0, le=2**31 - 1)
    method: MethodName = Field(
        "supervised",
        description="`supervised`, `dpo` on preference rows, or `reinforcement` on prompts scored by a grader.",
    )
    from_checkpoint: str | None = Field(
        None, max_length=600, description="Start from this fine-tuned model's or checkpoint's adapter."
    )

    @model_validator(mode="after")
    def _check_method(self) -> Self:
        check_method(self.method, self.task, self.training.packing)
        check_option_blocks(self.method, self)
        check_required(self.method, self)
        return self

    @property
    def row_shape(self) -> RowShape:
        """What this job's training rows look like: its method's."""
        return METHOD_RULES[self.method].rows

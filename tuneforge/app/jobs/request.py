"""The POST body of a job, in OpenAI's shape plus Tuneforge's blocks, and how it resolves to a `JobSpec`.

`JobCreate.resolve()` folds OpenAI's `method.supervised.hyperparameters` into the blocks and returns the
fully resolved `JobSpec` (tuneforge/contract/spec) that is stored on the job and that the worker trains from.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, model_validator

from tuneforge.contract.graders.shapes import Grader
from tuneforge.contract.spec import (
    DEFAULT_LEARNING_RATE,
    JobSpec,
    MethodName,
    ReinforcementSpec,
    SpecBlocks,
    SpecError,
    Strict,
    set_to_non_default,
)
from tuneforge.contract.spec.method import METHOD_RULES, check_option_blocks


class SupervisedHyperparameters(Strict):
    n_epochs: int | Literal["auto"] = Field("auto", description="Maps to training.epochs.")
    batch_size: int | Literal["auto"] = Field("auto", description="Maps to training.batch_size.")
    learning_rate_multiplier: float | Literal["auto"] = Field(
        "auto", description=f"Multiplies the base learning rate {DEFAULT_LEARNING_RATE}."
    )

    @model_validator(mode="after")
    def _check(self) -> SupervisedHyperparameters:
        if isinstance(self.n_epochs, int) and not 1 <= self.n_epochs <= 1000:
            raise SpecError("n_epochs", "n_epochs must be between 1 and 1000")
        if isinstance(self.batch_size, int) and not 1 <= self.batch_size <= 4096:
            raise SpecError("batch_size", "batch_size must be between 1 and 4096")
        lrm = self.learning_rate_multiplier
        if isinstance(lrm, float | int) and not 0 < lrm <= 1000:
            raise SpecError("learning_rate_multiplier", "learning_rate_multiplier must be > 0 and <= 1000")
        return self


class SupervisedMethod(Strict):
    hyperparameters: SupervisedHyperparameters = Field(default_factory=SupervisedHyperparameters)


class DpoHyperparameters(SupervisedHyperparameters):
    beta: float | Literal["auto"] = Field("auto", description="Maps to preference.beta.")

    @model_validator(mode="after")
    def _check_beta(self) -> DpoHyperparameters:
        if isinstance(self.beta, float | int) and not 0 < self.beta <= 10:
            raise SpecError("beta", "beta must be > 0 and <= 10")
        return self


class DpoMethod(Strict):
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class ReinforcementHyperparameters(SupervisedHyperparameters):
    """OpenAI's reinforcement hyperparameters. The algorithm's own knobs are in the `reinforcement` block."""

    eval_interval: int | Literal["auto"] = Field("auto", description="Maps to training.eval_every.")
    eval_samples: int | Literal["auto"] = Field("auto", description="Maps to reinforcement.eval_samples.")
    compute_multiplier: float | Literal["auto"] = Field(
        "auto",
        description="Scales the exploration: reinforcement.generations_per_prompt = max(2, round(4 x this)).",
    )
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = Field(
        None, description="Refused: no model this server trains reasons."
    )

    @model_validator(mode="after")
    def _check_rft(self) -> ReinforcementHyperparameters:
        if self.reasoning_effort not in (None, "default"):
            raise SpecError(
                "reasoning_effort",
                "reasoning_effort is not supported: no model this server trains is a reasoning model",
            )
        if isinstance(self.eval_interval, int) and not 1 <= self.eval_interval <= 1_000_000:
            raise SpecError("eval_interval", "eval_interval must be between 1 and 1000000")
        if isinstance(self.eval_samples, int) and not 1 <= self.eval_samples <= 1000:
            raise SpecError("eval_samples", "eval_samples must be between 1 and 1000")
        cm = self.compute_multiplier
        if isinstance(cm, float | int) and not 0 < cm <= 16:
            raise SpecError("compute_multiplier", "compute_multiplier must be > 0 and <= 16")
        return self


class ReinforcementMethod(Strict):
    grader: Grader = Field(description="How each sampled completion is scored (OpenAI's grader objects).")
    hyperparameters: ReinforcementHyperparameters = Field(default_factory=ReinforcementHyperparameters)


class Method(Strict):
    """OpenAI's `method`: a type, and at most one block, the one named by the type."""

    type: MethodName = Field(
        "supervised",
        description="`supervised`, `dpo` on preference rows, or `reinforcement` on prompts scored by a grader.",
    )
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: ReinforcementMethod | None = None

    @model_validator(mode="after")
    def _check(self) -> Method:
        for other in get_args(MethodName):
            if other != self.type and getattr(self, other) is not None:
                raise SpecError(other, f"method.{other} does not go with method.type={self.type}")
        return self

    def block(self) -> SupervisedMethod | DpoMethod | ReinforcementMethod | None:
        """The block of this method's type, if given."""
        block: SupervisedMethod | DpoMethod | ReinforcementMethod | None = getattr(self, self.type)
        return block


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


def _nul_path(value: Any, path: str = "") -> str | None:
    """Where a NUL character hides in raw JSON, if anywhere. PostgreSQL text cannot hold one, and no
    file id, model name or metadata value legitimately contains one."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        key_path = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and "\x00" in key:
            return key_path
        if (found := _nul_path(item, key_path)) is not None:
            return found
    return None


class JobCreate(SpecBlocks):
    """Body of POST /v1/fine_tuning/jobs."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        if (where := _nul_path(data)) is not None:
            raise SpecError(where, "contains a NUL character")
        return data

    model: str = Field(min_length=1, max_length=512, description="A model directory under the models root.")
    training_file: str = Field(min_length=1, max_length=64, description="Id of an uploaded fine-tune file.")
    validation_file: str | None = Field(None, max_length=64)
    suffix: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: Metadata | None = None
    method: Method | None = None
    hyperparameters: SupervisedHyperparameters | None = Field(
        None, description="Deprecated OpenAI field; prefer method.supervised.hyperparameters."
    )
    from_checkpoint: str | None = Field(
        None,
        min_length=1,
        max_length=600,
        description="Continue training from an `ft:` model id, a checkpoint's `fine_tuned_model_checkpoint`, or a "
        "checkpoint id (`ftckpt-...`) of the same organization, base model, task and LoRA shape.",
    )

    def _hyperparameters(self) -> tuple[SupervisedHyperparameters | None, str]:
        block = self.method.block() if self.method is not None else None
        if self.method is not None and block is not None:
            if self.hyperparameters is not None:
                raise SpecError("hyperparameters", f"give hyperparameters in method.{self.method.type} only, not both")
            return block.hyperparameters, f"method.{self.method.type}.hyperparameters"
        return self.hyperparameters, "hyperparameters"

    def resolve(self) -> JobSpec:
        """Fold OpenAI hyperparameters into the Tuneforge blocks; refuse contradictions."""
        training = self.training.model_copy()
        hp, where = self._hyperparameters()
        if hp is not None:
            explicit = self.training.model_fields_set
            if hp.n_epochs != "auto":
                if "epochs" in explicit and training.epochs != hp.n_epochs:
                    raise SpecError(f"{where}.n_epochs", "contradicts training.epochs")
                if "max_steps" in explicit:
                    raise SpecError(f"{where}.n_epochs", "contradicts training.max_steps")
                training.epochs = hp.n_epochs
            if hp.batch_size != "auto":
                if "batch_size" in explicit and training.batch_size != hp.batch_size:
                    raise SpecError(f"{where}.batch_size", "contradicts training.batch_size")
                training.batch_size = hp.batch_size
            if hp.learning_rate_multiplier != "auto":
                if "learning_rate" in explicit:
                    raise SpecError(
                        f"{where}.learning_rate_multiplier",
                        "give training.learning_rate or learning_rate_multiplier, not both",
                    )
                lr = DEFAULT_LEARNING_RATE * float(hp.learning_rate_multiplier)
                if lr > 1.0:
                    raise SpecError(f"{where}.learning_rate_multiplier", f"gives a learning rate of {lr}, above 1")
                training.learning_rate = lr
        if training.epochs is None and training.max_steps is None:
            training.epochs = 3
        split = self.data.validation_split
        if split is None:
            split = 0.0 if self.validation_file else 0.1
        elif self.validation_file and split > 0:
            raise SpecError("data.validation_split", "validation_split cannot be used with a validation_file")
        # Checked before the assignment, which would otherwise fail inside pydantic (a schemathesis find).
        if split + self.data.test_split >= 1.0:
            raise SpecError("data.test_split", f"validation_split ({split}) + test_split must be below 1")
        data = self.data.model_copy(update={"validation_split": split})
        method = self.method.type if self.method is not None else "supervised"
        preference = self.preference.model_copy()
        if isinstance(hp, DpoHyperparameters) and hp.beta != "auto":
            if set_to_non_default(self.preference, "beta") and self.preference.beta != hp.beta:
                raise SpecError(f"{where}.beta", "contradicts preference.beta")
            preference.beta = float(hp.beta)
        check_option_blocks(method, self)  # e.g. a preference block with method.type=supervised
        block = self.method.block() if self.method is not None else None
        reinforcement = _reinforcement(self, block, hp, where, training)
        if not METHOD_RULES[method].loss_ratio_watch and "loss_watchdog" not in self.training.model_fields_set:
            # The non-finite check stays (the loss makes it); the ratio to the first loss means nothing here.
            training.loss_watchdog = training.loss_watchdog.model_copy(update={"enabled": False})
        return JobSpec(
            reinforcement=reinforcement,
            method=method,
            from_checkpoint=self.from_checkpoint,
            preference=preference,
            task=self.task,
            seed=self.seed if self.seed is not None else random.randint(0, 2**31 - 1),
            quantization=self.quantization,
            lora=self.lora,
            training=training,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            data=data,
            samples=self.samples,
            integrations=self.integrations,
        )


def _reinforcement(
    body: JobCreate, block: Any, hp: SupervisedHyperparameters | None, where: str, training: Any
) -> ReinforcementSpec:
    """The reinforcement block with OpenAI's grader and hyperparameters folded in."""
    out = body.reinforcement.model_copy()
    if isinstance(block, ReinforcementMethod):
        if body.reinforcement.grader is not None:
            raise SpecError("reinforcement.grader", "give the grader in method.reinforcement.grader only")
        out.grader = block.grader
    if not isinstance(hp, ReinforcementHyperparameters):
        return out
    explicit = body.reinforcement.model_fields_set
    if hp.eval_interval != "auto":
        if "eval_every" in body.training.model_fields_set and training.eval_every != hp.eval_interval:
            raise SpecError(f"{where}.eval_interval", "contradicts training.eval_every")
        training.eval_every = hp.eval_interval
    if hp.eval_samples != "auto":
        if "eval_samples" in explicit and out.eval_samples != hp.eval_samples:
            raise SpecError(f"{where}.eval_samples", "contradicts reinforcement.eval_samples")
        out.eval_samples = hp.eval_samples
    if hp.compute_multiplier != "auto":
        if "generations_per_prompt" in explicit:
            raise SpecError(
                f"{where}.compute_multiplier",
                "give reinforcement.generations_per_prompt or compute_multiplier, not both",
            )
        out.generations_per_prompt = min(64, max(2, round(4 * float(hp.compute_multiplier))))
    return out


def openai_hyperparameters(spec: JobSpec) -> dict[str, Any]:
    """The job object's `hyperparameters`, in OpenAI's vocabulary."""
    return {
        "n_epochs": spec.training.epochs if spec.training.epochs is not None else "auto",
        "batch_size": spec.training.batch_size,
        "learning_rate_multiplier": spec.training.learning_rate / DEFAULT_LEARNING_RATE,
    }


# Each method's own hyperparameters, shown beside the shared ones.
_METHOD_HYPERPARAMETERS: dict[MethodName, Callable[[JobSpec], dict[str, Any]]] = {
    "supervised": lambda spec: {},
    "dpo": lambda spec: {"beta": spec.preference.beta},
    "reinforcement": lambda spec: {
        "eval_interval": spec.training.eval_every if spec.training.eval_every is not None else "auto",
        "eval_samples": spec.reinforcement.eval_samples,
        "compute_multiplier": spec.reinforcement.generations_per_prompt / 4,
    },
}


def openai_method(spec: JobSpec) -> dict[str, Any]:
    """The job object's `method`, as OpenAI shows it (with the grader, for reinforcement)."""
    hp = {**openai_hyperparameters(spec), **_METHOD_HYPERPARAMETERS[spec.method](spec)}
    block: dict[str, Any] = {"hyperparameters": hp}
    for name in METHOD_RULES[spec.method].required:  # e.g. reinforcement.grader, shown in its block
        value: Any = spec
        for part in name.split("."):
            value = getattr(value, part)
        block[name.split(".")[-1]] = value.model_dump(mode="json", exclude_none=True)
    return {"type": spec.method, spec.method: block}


def openai_integrations(spec: JobSpec) -> list[dict[str, Any]] | None:
    """The job object's `integrations`: the `wandb` ones, in OpenAI's shape. `mlflow` is Tuneforge's own type,
    outside the documented enum that strict clients check, so it is shown in `spec.integrations` only."""
    shown = [
        {"type": "wandb", "wandb": item.wandb.model_dump(mode="json", exclude_none=True)}
        for item in spec.integrations
        if item.wandb is not None
    ]
    return shown or None

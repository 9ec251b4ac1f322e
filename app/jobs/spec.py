"""The job spec: what a user may ask for, validated strictly, with documented defaults.

`JobCreate` is the POST body (OpenAI's fields plus Tuneforge's extension blocks). `JobCreate.resolve()`
folds OpenAI's `method.supervised.hyperparameters` into the blocks and returns a `JobSpec`: the fully
resolved spec that is stored on the job and that the worker trains from. This module depends on
pydantic alone, so `worker/training/` can import it without pulling in the web or database layers.
"""

from __future__ import annotations

import random
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_LEARNING_RATE = 2e-4


class SpecError(ValueError):
    """A spec that cannot work. Raised inside a model validator, `param` is relative to that model
    (the error handler prefixes the model's location); raised by `resolve()`, it is absolute."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _set_to_non_default(model: BaseModel, name: str) -> bool:
    info = type(model).model_fields[name]
    return name in model.model_fields_set and getattr(model, name) != info.default


# --------------------------------------------------------------------------- blocks


class QuantizationSpec(Strict):
    bits: Literal[4, 8] | None = Field(
        4,
        description="Base-model weight precision: 4 (QLoRA), 8, or null for plain LoRA on unquantized weights.",
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type. Applies to 4-bit only.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (4-bit only).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Dtype of the matmuls. `auto` is bfloat16 where the device supports it, else float32.",
    )

    @model_validator(mode="after")
    def _check(self) -> QuantizationSpec:
        if self.bits != 4:
            for name in ("quant_type", "double_quant"):
                # Only a non-default value is a contradiction: the stored, resolved spec lists
                # every field, and must validate again when the worker reads it.
                if _set_to_non_default(self, name):
                    raise SpecError(name, f"`{name}` applies to 4-bit quantization only, but bits={self.bits}")
        return self


class LoraSpec(Strict):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha/sqrt(r)).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=200)]] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or `all-linear` for every linear layer but the output head.",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    use_rslora: bool = Field(False, description="Rank-stabilized scaling alpha/sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    modules_to_save: list[str] | None = Field(
        None, description="Extra modules trained in full and saved with the adapter (e.g. a classifier head)."
    )

    @model_validator(mode="after")
    def _check(self) -> LoraSpec:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise SpecError("target_modules", "target_modules must name at least one module, or be 'all-linear'")
        return self


class EarlyStoppingSpec(Strict):
    metric: Literal["eval_loss"] = Field("eval_loss", description="Metric watched; lower is better.")
    patience: int = Field(3, ge=1, le=1000, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest decrease that counts as an improvement.")


class LossWatchdogSpec(Strict):
    enabled: bool = Field(True, description="Fail the job with error.code=nan_loss on NaN/inf or exploding loss.")
    max_ratio: float = Field(
        10.0, gt=1.0, description="Loss above this multiple of the first logged loss counts as exploding."
    )
    patience: int = Field(3, ge=1, description="Consecutive bad logging steps before failing.")


class LossSpec(Strict):
    class_weights: Literal["balanced"] | list[Annotated[float, Field(gt=0)]] | None = Field(
        None,
        description="sequence_classification: per-class weights in label order (sorted label names), "
        "or `balanced` for n_samples / (n_classes * class_count).",
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="sequence_classification: label smoothing.")
    regression_loss: Literal["mse", "huber"] = Field("mse", description="regression: the loss on the target.")
    huber_delta: float = Field(1.0, gt=0, description="regression with huber: where the loss turns linear.")


class TrainingSpec(Strict):
    epochs: int | None = Field(None, ge=1, le=1000, description="Passes over the training set (default 3).")
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Optimizer steps; overrides epochs.")
    batch_size: int = Field(4, ge=1, le=4096, description="Examples per micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(DEFAULT_LEARNING_RATE, gt=0, le=1.0, description="Peak learning rate.")
    max_seq_length: int = Field(512, ge=8, le=131_072, description="Longer examples are truncated (and counted).")
    packing: bool = Field(False, description="Concatenate short causal-LM examples into full-length rows.")
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together (less padding); the order stays shuffled."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; null disables clipping.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="Decoupled weight decay (not on biases/norms).")
    train_on_inputs: bool = Field(False, description="Also compute loss on prompts / non-assistant turns.")
    logging_every: int = Field(1, ge=1, description="Steps between metric points.")
    eval_every: int | None = Field(None, ge=1, description="Steps between evaluations (default: once per epoch).")
    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints (default: at the end only).")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop when the eval metric stalls.")
    loss_watchdog: LossWatchdogSpec = Field(default_factory=LossWatchdogSpec)
    loss: LossSpec = Field(default_factory=LossSpec, description="Task-specific loss options.")

    @model_validator(mode="after")
    def _check(self) -> TrainingSpec:
        if self.epochs is not None and self.max_steps is not None:
            raise SpecError("max_steps", "set either training.epochs or training.max_steps, not both")
        return self


class SGDSpec(Strict):
    name: Literal["sgd"]
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False

    @model_validator(mode="after")
    def _check(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0:
            raise SpecError("nesterov", "nesterov needs momentum > 0")
        return self


class AdagradSpec(Strict):
    name: Literal["adagrad"]
    eps: float = Field(1e-10, gt=0)
    lr_decay: float = Field(0.0, ge=0)


class RMSpropSpec(Strict):
    name: Literal["rmsprop"]
    alpha: float = Field(0.99, gt=0, lt=1)
    momentum: float = Field(0.0, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    centered: bool = False


class _AdamFamily(Strict):
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)


class AdamSpec(_AdamFamily):
    name: Literal["adam"]


class AdamWSpec(_AdamFamily):
    name: Literal["adamw"] = "adamw"


class AdamW8bitSpec(_AdamFamily):
    name: Literal["adamw_8bit"]


class PagedAdamW8bitSpec(_AdamFamily):
    name: Literal["paged_adamw_8bit"]


class PagedAdamW32bitSpec(_AdamFamily):
    name: Literal["paged_adamw_32bit"]


OptimizerSpec = Annotated[
    SGDSpec
    | AdagradSpec
    | RMSpropSpec
    | AdamSpec
    | AdamWSpec
    | AdamW8bitSpec
    | PagedAdamW8bitSpec
    | PagedAdamW32bitSpec,
    Field(discriminator="name"),
]

SCHEDULERS = (
    "constant",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "reduce_on_plateau",
)


class SchedulerSpec(Strict):
    name: Literal[
        "constant",
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "inverse_sqrt",
        "reduce_on_plateau",
    ] = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup length in steps.")
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0, description="Warmup as a fraction of total steps.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Floor of the decay, as a fraction of the peak.")
    num_cycles: int = Field(1, ge=1, le=1000, description="Hard restarts (cosine_with_restarts only).")
    power: float = Field(1.0, gt=0, description="Decay exponent (polynomial only).")
    factor: float = Field(0.5, gt=0, lt=1, description="LR multiplier on a plateau (reduce_on_plateau only).")
    patience: int = Field(1, ge=0, description="Evaluations without improvement (reduce_on_plateau only).")

    @model_validator(mode="after")
    def _check(self) -> SchedulerSpec:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise SpecError("warmup_ratio", "set either warmup_steps or warmup_ratio, not both")
        only = {
            "num_cycles": "cosine_with_restarts",
            "power": "polynomial",
            "factor": "reduce_on_plateau",
            "patience": "reduce_on_plateau",
        }
        for field, owner in only.items():
            if self.name != owner and _set_to_non_default(self, field):
                raise SpecError(field, f"`{field}` applies to the {owner} schedule only")
        return self


class DataSpec(Strict):
    format: Literal["auto", "jsonl", "csv"] = Field("auto", description="Detected from content when `auto`.")
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

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if (self.validation_split or 0.0) + self.test_split >= 1.0:
            raise SpecError("test_split", "validation_split + test_split must be below 1")
        return self


TaskName = Literal["causal_lm", "sequence_classification", "regression"]


def _check_task_options(task: str, training: TrainingSpec) -> None:
    loss = training.loss
    if task != "sequence_classification":
        for name in ("class_weights", "label_smoothing"):
            if _set_to_non_default(loss, name):
                raise SpecError(f"training.loss.{name}", f"`{name}` applies to sequence_classification only")
    if task != "regression":
        for name in ("regression_loss", "huber_delta"):
            if _set_to_non_default(loss, name):
                raise SpecError(f"training.loss.{name}", f"`{name}` applies to regression only")
    if task != "causal_lm" and training.packing:
        raise SpecError("training.packing", "packing applies to causal_lm only")


class SpecBlocks(Strict):
    """Tuneforge's extension blocks, shared by the request (`JobCreate`) and the resolved `JobSpec`."""

    task: TaskName = Field("causal_lm", description="What the adapter learns.")
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    optimizer: OptimizerSpec = Field(default_factory=lambda: AdamWSpec(name="adamw"))
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    data: DataSpec = Field(default_factory=DataSpec)

    @model_validator(mode="after")
    def _check_task(self) -> Self:
        _check_task_options(self.task, self.training)
        return self


class JobSpec(SpecBlocks):
    """The resolved spec a worker trains from. Stored on the job as `spec`."""

    seed: int = Field(ge=0, le=2**31 - 1)


# --------------------------------------------------------------------------- OpenAI's request shape


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


class Method(Strict):
    type: Literal["supervised"] = Field("supervised", description="Only supervised fine-tuning is supported.")
    supervised: SupervisedMethod | None = None


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
    integrations: list[Any] | None = Field(None, max_length=0, description="Not supported; must be empty.")

    def _hyperparameters(self) -> tuple[SupervisedHyperparameters | None, str]:
        if self.method is not None and self.method.supervised is not None:
            if self.hyperparameters is not None:
                raise SpecError("hyperparameters", "give hyperparameters in method.supervised only, not both")
            return self.method.supervised.hyperparameters, "method.supervised.hyperparameters"
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
        return JobSpec(
            task=self.task,
            seed=self.seed if self.seed is not None else random.randint(0, 2**31 - 1),
            quantization=self.quantization,
            lora=self.lora,
            training=training,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            data=data,
        )


def openai_hyperparameters(spec: JobSpec) -> dict[str, Any]:
    """The job object's `hyperparameters`, in OpenAI's vocabulary."""
    return {
        "n_epochs": spec.training.epochs if spec.training.epochs is not None else "auto",
        "batch_size": spec.training.batch_size,
        "learning_rate_multiplier": spec.training.learning_rate / DEFAULT_LEARNING_RATE,
    }

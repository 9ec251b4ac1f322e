"""The model-side blocks: quantization, LoRA, and the training loop's settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tuneforge.contract.spec.base import DEFAULT_LEARNING_RATE, SpecError, Strict, set_to_non_default


class QuantizationSpec(Strict):
    bits: Literal[4, 8] | None = Field(
        4,
        description="Base-model weight precision: 4 (QLoRA), 8, or null for plain LoRA on unquantized weights.",
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type. Applies to 4-bit only.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (4-bit only).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description=(
            "Dtype of the matmuls. `auto`: on a GPU bfloat16 where it is supported, else float16; on a CPU "
            "bfloat16 for 4-bit where the CPU computes in it natively (AVX512-BF16 or AMX), else float32."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> QuantizationSpec:
        if self.bits != 4:
            for name in ("quant_type", "double_quant"):
                # Only a non-default value is a contradiction: the stored, resolved spec lists
                # every field, and must validate again when the worker reads it.
                if set_to_non_default(self, name):
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
    batch_size: int = Field(
        4,
        ge=1,
        le=4096,
        description="Examples per micro-batch, over all devices: a job on N devices (`--devices-per-job`) "
        "gives each N-th of them, so batch_size x gradient_accumulation_steps is the global batch whatever N.",
    )
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
    # Measured, not planned: a pass's cost depends on the machine. Only what cannot change training is
    # ever skipped (samples; evaluations that neither early stopping nor a plateau schedule reads), so
    # the budget never changes the adapter, and an exact resume replays the same steps.
    eval_budget: float | None = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="At most this share of the run's wall time goes to evaluations and sample generations at the "
        "default cadence (once per epoch): an evaluation that is due, or its samples, is skipped while running it "
        "would take the share over the budget (measured as the run goes, keeping room for the last ones). The "
        "step-0 and the last evaluation and samples always run, and so do evaluations that early stopping or the "
        "`plateau` scheduler reads, or that a job on several devices makes. An explicit `training.eval_every` "
        "is a request: every evaluation it schedules runs with its samples. null: no budget.",
    )
    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints (default: at the end only).")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop when the eval metric stalls.")
    loss_watchdog: LossWatchdogSpec = Field(default_factory=LossWatchdogSpec)
    loss: LossSpec = Field(default_factory=LossSpec, description="Task-specific loss options.")

    @model_validator(mode="after")
    def _check(self) -> TrainingSpec:
        if self.epochs is not None and self.max_steps is not None:
            raise SpecError("max_steps", "set either training.epochs or training.max_steps, not both")
        return self

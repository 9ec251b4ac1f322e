"""A run's setup: rows to token tensors (encoded by the job's training method), the base model to a
LoRA-wrapped one, and the step plan."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from transformers import set_seed

from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.augment import augment
from tuneforge.worker.training.configs import compute_dtype, describe, get_peft_config
from tuneforge.worker.training.data import make_splits, normalize_rows
from tuneforge.worker.training.dropout import compact_lora_dropout
from tuneforge.worker.training.encoded import Encoded
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.methods import TrainingMethod, method_for
from tuneforge.worker.training.model import (
    check_target_modules,
    load_model,
    load_tokenizer,
    prepare_quantized,
    return_large_blocks_to_the_os,
)
from tuneforge.worker.training.reporter import Reporter
from tuneforge.worker.training.samples import SamplePrompt


@dataclass
class PreparedData:
    tokenizer: Any
    train: Encoded
    validation: Encoded
    test: Encoded
    labels: list[str] | None
    # Regression targets are trained normalized: (mean, std) of the training split.
    norm: tuple[float, float] | None
    # Prompts for sample generations (causal_lm): the spec's, then a few from the validation split.
    sample_prompts: list[SamplePrompt] = field(default_factory=list)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


@dataclass(frozen=True)
class StepPlan:
    micro_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    eval_every: int


def prepare_data(
    spec: JobSpec,
    model_dir: Path,
    rows: list[dict[str, Any]],
    validation_rows: list[dict[str, Any]] | None,
    reporter: Reporter,
    method: TrainingMethod | None = None,
) -> PreparedData:
    """Normalize, split and augment the rows, and encode them the job's method's way (`method`, or the
    spec's when not given)."""
    method = method or method_for(spec)
    rows = normalize_rows(rows, spec)
    if validation_rows is not None:
        validation_rows = normalize_rows(validation_rows, spec, "validation_file")
    splits = make_splits(rows, validation_rows, spec)
    splits.train, augmented = augment(splits.train, spec)  # the training split only
    tokenizer = load_tokenizer(model_dir)
    encoded = method.encode(splits, tokenizer)
    train, val, test = encoded.train, encoded.validation, encoded.test
    if not train.examples:
        raise TrainingError(ErrorCode.INVALID_FILE, "No usable training examples after tokenization.", "training_file")
    extra = f" ({augmented} of them augmented copies)" if spec.data.augmentation else ""
    trained_on = f"; {train.loss_tokens} of {train.real_tokens} training tokens carry loss" if train.loss_tokens else ""
    reporter.event(
        f"Data ready: {len(train.examples)} training{extra}, {len(val.examples)} validation, {len(test.examples)} "
        f"test examples; {train.truncated} truncated to {spec.training.max_seq_length} tokens{trained_on}",
        data={
            "train_examples": len(train.examples),
            "validation_examples": len(val.examples),
            "test_examples": len(test.examples),
            "truncated": train.truncated + val.truncated + test.truncated,
            "dropped": train.dropped + val.dropped + test.dropped,
            "train_tokens": train.real_tokens,
            "loss_tokens": train.loss_tokens,
            "augmented": augmented,
        },
    )
    prompts = method.sample_prompts(tokenizer, splits.validation)
    return PreparedData(tokenizer, train, val, test, encoded.labels, encoded.norm, prompts)


def prepare_model(
    spec: JobSpec, model_dir: Path, labels: list[str] | None, device: torch.device, reporter: Reporter
) -> torch.nn.Module:
    """Load the base (quantized as the spec says), check the spec against it, and attach LoRA."""
    return_large_blocks_to_the_os(device)  # before loading: its temporaries are large blocks too
    reporter.event(f"Loading model {model_dir.name}: {describe(spec, device)}")
    model, heads = load_model(model_dir, spec, device, num_labels=len(labels) if labels else None)
    check_target_modules(model, spec.lora.target_modules)
    if spec.quantization.bits is not None:
        model = prepare_quantized(model, compute_dtype(spec.quantization, device))
    if spec.training.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # the frozen embeddings' output must carry grad into checkpointed blocks
    set_seed(spec.seed)  # LoRA init draws from the RNG: same seed, same initial adapter
    peft_model: torch.nn.Module = get_peft_model(model, get_peft_config(spec.lora, spec.task, heads))
    compact_lora_dropout(peft_model, device)  # CPU: 1-byte dropout masks instead of fp32 ones (dropout.py)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    reporter.event(
        f"LoRA attached: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)",
        data={"trainable_params": trainable, "total_params": total},
    )
    return peft_model


def plan_steps(spec: JobSpec, n_train: int) -> StepPlan:
    t = spec.training
    micro_per_epoch = math.ceil(n_train / t.batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / t.gradient_accumulation_steps))
    total_steps = t.max_steps or steps_per_epoch * (t.epochs or 1)
    return StepPlan(micro_per_epoch, steps_per_epoch, total_steps, t.eval_every or steps_per_epoch)

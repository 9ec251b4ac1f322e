"""A run's setup: rows to token tensors (encoded by the job's training method), the base model to a
LoRA-wrapped one, and the step plan."""

from __future__ import annotations

import math
import tempfile
import time
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
from tuneforge.worker.training.data import make_splits, normalize_rows, split_indices
from tuneforge.worker.training.dropout import compact_lora_dropout
from tuneforge.worker.training.encoded import Encoded
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.methods import TrainingMethod, method_for
from tuneforge.worker.training.model import (
    check_target_modules,
    load_model,
    load_tokenizer,
    prepare_quantized,
)
from tuneforge.worker.training.prepare import PreparedCache, RowSource, all_rows, as_source, prepared_store
from tuneforge.worker.training.reporter import Reporter
from tuneforge.worker.training.samples import SamplePrompt

# Rows read back from a prepared file for sample prompts (samples.from_validation takes the first usable ones).
SAMPLE_ROWS = 64


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
    rows: list[dict[str, Any]] | RowSource,
    validation_rows: list[dict[str, Any]] | RowSource | None,
    reporter: Reporter,
    method: TrainingMethod | None = None,
    *,
    cache: PreparedCache | None = None,
    scratch: Path | None = None,
) -> PreparedData:
    """Normalize, split and augment the rows, and encode them the job's method's way (`method`, or the
    spec's when not given). A method that `prepares_once` reads each file from a prepared store instead
    (prepare.py: from `cache` when the same inputs were prepared before, else built under `scratch`)."""
    method = method or method_for(spec)
    tokenizer = load_tokenizer(model_dir)
    source = as_source(rows)
    vsource = as_source(validation_rows) if validation_rows is not None else None
    if method.prepares_once() and spec.data.augmentation is None:
        return _prepare_once(spec, model_dir, tokenizer, source, vsource, reporter, method, cache, scratch)
    rows = normalize_rows(all_rows(source), spec)
    validation = normalize_rows(all_rows(vsource), spec, "validation_file") if vsource is not None else None
    splits = make_splits(rows, validation, spec)
    splits.train, augmented = augment(splits.train, spec)  # the training split only
    encoded = method.encode(splits, tokenizer)
    _data_ready(spec, encoded.train, encoded.validation, encoded.test, augmented, reporter, {})
    prompts = method.sample_prompts(tokenizer, splits.validation)
    return PreparedData(
        tokenizer, encoded.train, encoded.validation, encoded.test, encoded.labels, encoded.norm, prompts
    )


def _prepare_once(
    spec: JobSpec,
    model_dir: Path,
    tokenizer: Any,
    source: RowSource,
    vsource: RowSource | None,
    reporter: Reporter,
    method: TrainingMethod,
    cache: PreparedCache | None,
    scratch: Path | None,
) -> PreparedData:
    """Each file tokenized once (or found prepared), then split by row position: the examples, counts
    and order `make_splits` + `method.encode` give, read from memory-mapped stores."""
    scratch = scratch or Path(tempfile.mkdtemp(prefix="tuneforge-prepared-"))
    started = time.monotonic()
    store, reused, key = prepared_store(source, model_dir, tokenizer, spec, scratch, reporter, cache)
    vstore = None
    if vsource is not None:
        vstore, v_reused, _ = prepared_store(
            vsource, model_dir, tokenizer, spec, scratch, reporter, cache, param="validation_file"
        )
        reused = reused and v_reused
    seconds = time.monotonic() - started
    idx = split_indices(store.n_rows, vstore is not None, spec)
    block = spec.training.max_seq_length if spec.training.packing else None
    train, test = store.view(idx.train, block), store.view(idx.test, block)
    val = vstore.view(range(vstore.n_rows), block) if vstore is not None else store.view(idx.validation, block)
    if vstore is not None:
        first = list(range(min(vstore.n_rows, SAMPLE_ROWS)))
        sample_rows = vsource.rows_at(first) if vsource is not None else []
    else:
        sample_rows = source.rows_at(idx.validation[:SAMPLE_ROWS])
    prepared = {
        "prepared_data": "reused" if reused else "prepared",
        "prepare_seconds": round(seconds, 3),
        "prepared_key": key,
        "rows": store.n_rows,
    }
    _data_ready(spec, train, val, test, 0, reporter, prepared)
    prompts = method.sample_prompts(tokenizer, normalize_rows(sample_rows, spec, "validation_file"))
    return PreparedData(tokenizer, train, val, test, None, None, prompts)


def _data_ready(
    spec: JobSpec,
    train: Encoded,
    val: Encoded,
    test: Encoded,
    augmented: int,
    reporter: Reporter,
    prepared: dict[str, Any],
) -> None:
    if not train.examples:
        raise TrainingError(ErrorCode.INVALID_FILE, "No usable training examples after tokenization.", "training_file")
    extra = f" ({augmented} of them augmented copies)" if spec.data.augmentation else ""
    trained_on = f"; {train.loss_tokens} of {train.real_tokens} training tokens carry loss" if train.loss_tokens else ""
    how = ""
    if prepared:
        how = (
            "; prepared data reused"
            if prepared["prepared_data"] == "reused"
            else f"; prepared in {prepared['prepare_seconds']:.1f}s"
        )
    reporter.event(
        f"Data ready: {len(train.examples)} training{extra}, {len(val.examples)} validation, {len(test.examples)} "
        f"test examples; {train.truncated} truncated to {spec.training.max_seq_length} tokens{trained_on}{how}",
        data=prepared
        | {
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


def prepare_model(
    spec: JobSpec, model_dir: Path, labels: list[str] | None, device: torch.device, reporter: Reporter
) -> torch.nn.Module:
    """Load the base (quantized as the spec says), check the spec against it, and attach LoRA."""
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

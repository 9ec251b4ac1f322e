"""One training run, top to bottom: load, adapt, train, evaluate, save.

`run()` knows nothing about Celery or the database. It reads a spec and rows, writes artifacts
under `out_dir`, and reports through a `Reporter`. Everything that can resume a run (adapter,
optimizer, scheduler, RNG, data position) is in each checkpoint.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import get_peft_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from transformers import set_seed

from app.jobs.spec import JobSpec
from worker.training import checkpoints as ckpt
from worker.training.configs import compute_dtype, describe, get_peft_config, pick_device
from worker.training.data import (
    IGNORE,
    Encoded,
    batch_order,
    collate,
    encode_causal,
    encode_labeled,
    label_names,
    make_splits,
    regression_norm,
)
from worker.training.errors import StopTraining, TrainingError
from worker.training.model import check_target_modules, load_model, load_tokenizer, prepare_quantized
from worker.training.optim import (
    build_optimizer,
    build_scheduler,
    param_groups,
    scheduler_step_on_eval,
    scheduler_step_per_batch,
)
from worker.training.reporter import Reporter


@dataclass
class RunResult:
    adapter_dir: Path
    manifest: dict[str, str]
    trained_tokens: int
    steps: int
    final_metrics: dict[str, Any] = field(default_factory=dict)


def run(
    spec: JobSpec,
    model_dir: Path,
    rows: list[dict[str, Any]],
    validation_rows: list[dict[str, Any]] | None,
    out_dir: Path,
    reporter: Reporter,
    *,
    resume: bool = True,
    attempt: int = 1,
) -> RunResult:
    t = spec.training
    device = pick_device()
    set_seed(spec.seed)

    # ---- data
    splits = make_splits(rows, validation_rows, spec)
    tokenizer = load_tokenizer(model_dir)
    labels: list[str] | None = None
    norm: tuple[float, float] | None = None
    if spec.task == "causal_lm":
        train = encode_causal(splits.train, tokenizer, spec)
        val = encode_causal(splits.validation, tokenizer, spec)
        test = encode_causal(splits.test, tokenizer, spec)
    else:
        labels = label_names(splits.train, spec) if spec.task == "sequence_classification" else None
        norm = regression_norm(splits.train, spec) if spec.task == "regression" else None
        train, val, test = (
            encode_labeled(s, tokenizer, spec, labels, norm) for s in (splits.train, splits.validation, splits.test)
        )
    if not train.examples:
        raise TrainingError("invalid_file", "No usable training examples after tokenization.", "training_file")
    reporter.event(
        f"Data ready: {len(train.examples)} training, {len(val.examples)} validation, {len(test.examples)} test "
        f"examples; {train.truncated} truncated to {t.max_seq_length} tokens",
        data={
            "train_examples": len(train.examples),
            "validation_examples": len(val.examples),
            "test_examples": len(test.examples),
            "truncated": train.truncated + val.truncated + test.truncated,
            "dropped": train.dropped + val.dropped + test.dropped,
            "train_tokens": train.real_tokens,
        },
    )

    # ---- model
    reporter.event(f"Loading model {model_dir.name}: {describe(spec, device)}")
    model, heads = load_model(model_dir, spec, device, num_labels=len(labels) if labels else None)
    check_target_modules(model, spec.lora.target_modules)
    if spec.quantization.bits is not None:
        model = prepare_quantized(model, compute_dtype(spec.quantization, device))
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # the frozen embeddings' output must carry grad into checkpointed blocks
    set_seed(spec.seed)  # LoRA init draws from the RNG: same seed, same initial adapter
    model = get_peft_model(model, get_peft_config(spec.lora, spec.task, heads))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    reporter.event(
        f"LoRA attached: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)",
        data={"trainable_params": trainable, "total_params": total},
    )

    # ---- optimization
    micro_per_epoch = math.ceil(len(train.examples) / t.batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / t.gradient_accumulation_steps))
    total_steps = t.max_steps or steps_per_epoch * (t.epochs or 1)
    optimizer = build_optimizer(spec.optimizer, param_groups(model, t.weight_decay), t.learning_rate)
    scheduler = build_scheduler(spec.scheduler, optimizer, total_steps)
    eval_every = t.eval_every or steps_per_epoch
    adapter_meta = {
        "task": spec.task,
        "base_model": model_dir.name,
        "labels": labels,
        "label_normalization": {"mean": norm[0], "std": norm[1]} if norm else None,
    }

    step, epoch, micro_in_epoch, tokens_seen = 0, 0, 0, 0
    best: dict[str, Any] = {"metric": math.inf, "step": None, "state": None, "bad_evals": 0}
    ckpt_root = out_dir / "checkpoints"
    latest = ckpt.latest_complete(ckpt_root) if resume else None
    if latest is not None:
        state = ckpt.load_trainer_state(latest)
        set_peft_model_state_dict(model, _load_adapter_weights(latest / "adapter"))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        step, epoch, micro_in_epoch, tokens_seen = (
            state["step"],
            state["epoch"],
            state["micro_in_epoch"],
            state["tokens_seen"],
        )
        best.update(metric=state["best_metric"], step=state["best_step"])
        reporter.event(
            f"Resumed from step {step} (attempt {attempt})",
            data={"step": step, "attempt": attempt, "checkpoint": latest.name},
        )
    elif resume and ckpt_root.is_dir() and any(ckpt_root.glob(".tmp-*")):
        reporter.event("Ignored an incomplete checkpoint left by an interrupted write", level="warn")

    reporter.event(
        f"Training started: {total_steps} steps ({steps_per_epoch} per epoch), batch {t.batch_size} x "
        f"{t.gradient_accumulation_steps} accumulation, {spec.optimizer.name}, {spec.scheduler.name} schedule",
        data={"total_steps": total_steps, "steps_per_epoch": steps_per_epoch},
    )
    reporter.progress(step, total_steps, epoch + micro_in_epoch / micro_per_epoch)

    def trainer_state() -> dict[str, Any]:
        return {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "step": step,
            "epoch": epoch,
            "micro_in_epoch": micro_in_epoch,
            "tokens_seen": tokens_seen,
            "best_metric": best["metric"],
            "best_step": best["step"],
        }

    def save(metrics: dict[str, Any]) -> None:
        path, manifest = ckpt.save_checkpoint(ckpt_root, step, model, adapter_meta, trainer_state())
        reporter.checkpoint(step, path, manifest, metrics)
        reporter.event(f"Checkpoint saved at step {step}", data={"step": step})

    task_loss = TaskLoss(spec, train, device)
    lengths = [len(ex["input_ids"]) for ex in train.examples] if t.group_by_length else None
    watchdog = _LossWatchdog(spec)
    window = {"loss": torch.zeros((), device=device), "micro": 0, "tokens": 0, "t0": time.perf_counter(), "paused": 0.0}
    last_loss: float | None = None
    last_eval: dict[str, Any] = {}
    stopped_early = False
    model.train()

    while step < total_steps and not stopped_early:
        order = batch_order(len(train.examples), t.batch_size, spec.seed, epoch, lengths)
        while micro_in_epoch < len(order) and step < total_steps:
            # -- one optimizer step: gradient_accumulation_steps micro-batches (fewer at epoch end)
            group_end = min(len(order), micro_in_epoch + t.gradient_accumulation_steps)
            n_micro = group_end - micro_in_epoch
            for i in range(micro_in_epoch, group_end):
                examples = [train.examples[j] for j in order[i]]
                batch = collate(examples, tokenizer.pad_token_id)
                n_real = sum(len(ex["input_ids"]) for ex in examples)  # host-side: no device sync
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = task_loss(model, batch) / n_micro
                loss.backward()
                window["loss"] += loss.detach()
                window["tokens"] += n_real
                tokens_seen += n_real
            micro_in_epoch = group_end
            grad_norm = (
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                if t.max_grad_norm
                else _grad_norm(model)
            )
            lr_used = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler_step_per_batch(scheduler)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window["micro"] += 1
            epoch_float = epoch + micro_in_epoch / len(order)

            if step % t.logging_every == 0 or step == total_steps:
                # The only host sync of the step: one .item() per logging step. Windows are contiguous
                # (this logging, the reporter and any cancel check count in the next window), minus
                # the time spent evaluating and checkpointing, so tokens/s is the loop's real rate.
                now = time.perf_counter()
                elapsed = now - window["t0"] - window["paused"]
                last_loss = float(window["loss"].item()) / window["micro"]
                point = {
                    "step": step,
                    "epoch": round(epoch_float, 4),
                    "loss": last_loss,
                    "learning_rate": lr_used,
                    "grad_norm": float(grad_norm),
                    "tokens_per_second": window["tokens"] / elapsed if elapsed > 0 else None,
                    "num_tokens": tokens_seen,
                }
                reporter.metrics(point)
                watchdog.check(last_loss, step)
                window = {"loss": torch.zeros((), device=device), "micro": 0, "tokens": 0, "t0": now, "paused": 0.0}
            reporter.progress(step, total_steps, epoch_float)

            paused_from = time.perf_counter()
            if val.examples and (step % eval_every == 0 or step == total_steps):
                last_eval = evaluate(model, val, spec, tokenizer.pad_token_id, device, norm)
                reporter.metrics(
                    {
                        "step": step,
                        "epoch": round(epoch_float, 4),
                        "eval_loss": last_eval["eval_loss"],
                        "extra": last_eval,
                    }
                )
                reporter.event(f"Evaluation at step {step}: {_fmt(last_eval)}", data={"step": step, **last_eval})
                scheduler_step_on_eval(scheduler, last_eval["eval_loss"])
                stopped_early = _early_stopping(spec, best, last_eval["eval_loss"], step, model, reporter)
                model.train()
            if t.save_every and step % t.save_every == 0 and step < total_steps:
                save({"step": step, "train_loss": last_loss, "valid_loss": last_eval.get("eval_loss")})
            window["paused"] += time.perf_counter() - paused_from
            if (reason := reporter.stop_requested()) is not None:
                if reason == "shutdown" and not (t.save_every and step % t.save_every == 0):
                    # A rolling deploy: keep this step's work for the next attempt.
                    save({"step": step, "train_loss": last_loss, "valid_loss": last_eval.get("eval_loss")})
                raise StopTraining(reason)
            if stopped_early:
                break
        if micro_in_epoch >= len(order):
            epoch, micro_in_epoch = epoch + 1, 0

    # ---- final adapter: the best one if early stopping watched the run
    if best["state"] is not None and best["step"] != step:
        set_peft_model_state_dict(model, best["state"])
        reporter.event(
            f"Keeping the best adapter, from step {best['step']} (eval_loss {best['metric']:.4f})",
            data={"best_step": best["step"], "best_eval_loss": best["metric"]},
        )
        last_eval = evaluate(model, val, spec, tokenizer.pad_token_id, device, norm) if val.examples else {}
    save({"step": step, "train_loss": last_loss, "valid_loss": last_eval.get("eval_loss")})
    final_metrics: dict[str, Any] = {"train_loss": last_loss, "steps": step}
    if last_eval:
        final_metrics["validation"] = last_eval
    if test.examples:
        final_metrics["test"] = evaluate(model, test, spec, tokenizer.pad_token_id, device, norm)
        reporter.event(f"Test evaluation: {_fmt(final_metrics['test'])}", data=final_metrics["test"])

    adapter_dir = out_dir / "adapter"
    tmp = out_dir / ".tmp-adapter"
    shutil.rmtree(tmp, ignore_errors=True)
    ckpt.save_adapter(model, tmp, adapter_meta)
    manifest = ckpt.manifest_of(tmp)
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    tmp.rename(adapter_dir)
    return RunResult(adapter_dir, manifest, tokens_seen, step, final_metrics)


# --------------------------------------------------------------------------- helpers


class TaskLoss:
    """The training loss of a task, with its options (class weights, smoothing, Huber)."""

    def __init__(self, spec: JobSpec, train: Encoded, device: torch.device) -> None:
        self.task = spec.task
        self.opts = spec.training.loss
        self.weight: torch.Tensor | None = None
        if self.task == "sequence_classification" and self.opts.class_weights is not None:
            n = len(train.label_names)
            if self.opts.class_weights == "balanced":
                counts = torch.bincount(torch.tensor([int(ex["labels"]) for ex in train.examples]), minlength=n)
                self.weight = len(train.examples) / (n * counts.clamp(min=1).float())
            else:
                if len(self.opts.class_weights) != n:
                    raise TrainingError(
                        "invalid_spec",
                        f"training.loss.class_weights has {len(self.opts.class_weights)} weights for {n} classes "
                        f"({', '.join(train.label_names)}).",
                        "training.loss.class_weights",
                    )
                self.weight = torch.tensor(self.opts.class_weights, dtype=torch.float)
            self.weight = self.weight.to(device)

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.task == "causal_lm":
            return model(**batch).loss
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        if self.task == "regression":
            pred = logits.squeeze(-1)
            if self.opts.regression_loss == "huber":
                return F.huber_loss(pred, labels.float(), delta=self.opts.huber_delta)
            return F.mse_loss(pred, labels.float())
        return F.cross_entropy(logits, labels, weight=self.weight, label_smoothing=self.opts.label_smoothing)


def _grad_norm(model: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())


def _load_adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: Encoded,
    spec: JobSpec,
    pad_id: int,
    device: torch.device,
    norm: tuple[float, float] | None,
) -> dict[str, Any]:
    model.eval()
    bs = max(1, spec.training.batch_size)
    if spec.task == "causal_lm":
        total_loss, total_targets = 0.0, 0
        for i in range(0, len(data.examples), bs):
            batch = {k: v.to(device) for k, v in collate(data.examples[i : i + bs], pad_id).items()}
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            if n == 0:
                continue
            total_loss += float(model(**batch).loss) * n
            total_targets += n
        loss = total_loss / max(1, total_targets)
        return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    preds: list[Any] = []
    targets: list[Any] = []
    total_loss = 0.0
    for i in range(0, len(data.examples), bs):
        batch = {k: v.to(device) for k, v in collate(data.examples[i : i + bs], pad_id).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        if spec.task == "regression":
            out = logits.squeeze(-1)
            total_loss += float(F.mse_loss(out, labels.float(), reduction="sum"))
            preds += out.tolist()
        else:
            total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            preds += logits.argmax(-1).tolist()
        targets += labels.tolist()
    n = max(1, len(targets))
    if spec.task == "regression":
        assert norm is not None
        p = [v * norm[1] + norm[0] for v in preds]
        y = [v * norm[1] + norm[0] for v in targets]
        mean_y = sum(y) / n
        mse = sum((a - b) ** 2 for a, b in zip(p, y, strict=True)) / n
        var = sum((b - mean_y) ** 2 for b in y) / n
        return {
            "eval_loss": total_loss / n,
            "mse": mse,
            "mae": sum(abs(a - b) for a, b in zip(p, y, strict=True)) / n,
            "r2": 1.0 - mse / var if var > 0 else 0.0,
        }
    return {"eval_loss": total_loss / n, **classification_metrics(preds, targets, data.label_names)}


def classification_metrics(preds: list[int], targets: list[int], names: list[str]) -> dict[str, Any]:
    n = max(1, len(targets))
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for k, name in enumerate(names):
        tp = sum(1 for p, y in zip(preds, targets, strict=True) if p == k and y == k)
        fp = sum(1 for p, y in zip(preds, targets, strict=True) if p == k and y != k)
        fn = sum(1 for p, y in zip(preds, targets, strict=True) if p != k and y == k)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
        f1s.append(f1)
    return {
        "accuracy": sum(1 for p, y in zip(preds, targets, strict=True) if p == y) / n,
        "macro_f1": sum(f1s) / max(1, len(f1s)),
        "per_class": per_class,
    }


def _early_stopping(
    spec: JobSpec, best: dict[str, Any], metric: float, step: int, model: torch.nn.Module, reporter: Reporter
) -> bool:
    es = spec.training.early_stopping
    if es is None:
        return False
    if metric < best["metric"] - es.min_delta:
        best.update(
            metric=metric,
            step=step,
            bad_evals=0,
            state={k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()},
        )
        return False
    best["bad_evals"] += 1
    if best["bad_evals"] >= es.patience:
        reporter.event(
            f"Early stopping at step {step}: {es.metric} did not improve for {es.patience} evaluations",
            data={"step": step, "best_step": best["step"]},
        )
        return True
    return False


class _LossWatchdog:
    def __init__(self, spec: JobSpec) -> None:
        self.cfg = spec.training.loss_watchdog
        self.first: float | None = None
        self.bad = 0

    def check(self, loss: float, step: int) -> None:
        if not self.cfg.enabled:
            return
        if not math.isfinite(loss):
            raise TrainingError(
                "nan_loss",
                f"The loss became {loss} at step {step}. Lower training.learning_rate, or set training.max_grad_norm.",
                "training.learning_rate",
            )
        if self.first is None:
            self.first = loss
            return
        self.bad = self.bad + 1 if loss > self.cfg.max_ratio * self.first else 0
        if self.bad >= self.cfg.patience:
            raise TrainingError(
                "nan_loss",
                f"The loss exploded to {loss:.3g} at step {step} (over {self.cfg.max_ratio}x the first "
                f"loss {self.first:.3g}). Lower training.learning_rate.",
                "training.learning_rate",
            )


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))

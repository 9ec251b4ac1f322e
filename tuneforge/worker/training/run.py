"""One training run, top to bottom: setup, resume, loop, finish.

`run()` knows nothing about Celery or the database, nor which training method it runs: the spec's
`TrainingMethod` (methods/) encodes the rows, makes the batches, the loss and the evaluation. It
reads a spec and rows, writes artifacts under `out_dir`, and reports through a `Reporter`.
Everything that can resume a run (adapter, optimizer, scheduler, RNG, data position) is in each
checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from torch.optim.lr_scheduler import ReduceLROnPlateau
from transformers import set_seed

from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import ErrorCode, StopReason
from tuneforge.worker.training import checkpoints as ckpt
from tuneforge.worker.training import distributed as ddp
from tuneforge.worker.training.configs import pick_device
from tuneforge.worker.training.controls import EarlyStopping, LossWatchdog
from tuneforge.worker.training.data import batch_order
from tuneforge.worker.training.errors import StopTraining, TrainingError
from tuneforge.worker.training.evaluation import format_metrics
from tuneforge.worker.training.host_memory import HostMemory, HostMemoryPolicy
from tuneforge.worker.training.methods import Loss, TrainingMethod, method_for
from tuneforge.worker.training.optim import (
    Scheduler,
    build_optimizer,
    build_scheduler,
    param_groups,
    scheduler_step_on_eval,
    scheduler_step_per_batch,
)
from tuneforge.worker.training.phases import EvalBudget, Phase, PhaseClock
from tuneforge.worker.training.prepare import PreparedCache, RowSource
from tuneforge.worker.training.publish import publish_adapter
from tuneforge.worker.training.reference import keep_as_reference
from tuneforge.worker.training.reporter import Reporter
from tuneforge.worker.training.samples import generate_samples
from tuneforge.worker.training.setup import PreparedData, StepPlan, plan_steps, prepare_data, prepare_model
from tuneforge.worker.training.state import TrainState
from tuneforge.worker.training.throughput import MetricWindow
from tuneforge.worker.training.tokenstore import example_lengths


@dataclass
class RunResult:
    adapter_dir: Path
    manifest: dict[str, str]
    trained_tokens: int
    steps: int
    final_metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """The parts of a run that the loop uses but does not replace."""

    spec: JobSpec
    # Supervised, DPO, ...: how batches are made, the loss, the evaluation. The loop never asks which.
    method: TrainingMethod
    data: PreparedData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    plan: StepPlan
    device: torch.device
    reporter: Reporter
    out_dir: Path
    adapter_meta: dict[str, Any]
    early: EarlyStopping
    watchdog: LossWatchdog
    loss: Loss
    clock: PhaseClock
    budget: EvalBudget
    host: HostMemory
    sampled_at: int | None = None

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / "checkpoints"

    def evaluate(self, split: str = "validation", phase: Phase = Phase.EVALUATIONS) -> dict[str, Any]:
        data = self.data.validation if split == "validation" else self.data.test
        with self.clock.timed(phase):
            return self.method.evaluate(self.model, data, self.data.tokenizer, self.device, self.data.norm)

    def sample(self, step: int) -> None:
        """Greedy generations from the sample prompts with the adapter as it is now (rank 0 alone)."""
        if not self.data.sample_prompts or not ddp.is_main() or self.sampled_at == step:
            return
        with self.clock.timed(Phase.SAMPLES):
            items = generate_samples(
                self.model,
                self.data.sample_prompts,
                self.data.tokenizer,
                self.spec.samples.max_new_tokens,
                self.spec.training.max_seq_length,
                self.device,
                # The training micro-batch: generating keeps no activations for a backward pass, so a
                # KV cache for this many prompts fits wherever a training step does.
                batch_size=self.spec.training.batch_size,
            )
        self.sampled_at = step
        self.reporter.samples(step, items)

    def save(self, state: TrainState) -> None:
        if not ddp.is_main():
            return  # rank 0 alone writes checkpoints
        with self.clock.timed(Phase.CHECKPOINTS):
            self._save(state)

    def _save(self, state: TrainState) -> None:
        trainer_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            **state.position(),
            "best_metric": self.early.best_metric,
            "best_step": self.early.best_step,
            "baseline_eval": state.baseline_eval,
        }
        path, manifest = ckpt.save_checkpoint(
            self.checkpoints, state.step, self.model, self.adapter_meta, trainer_state
        )
        self.reporter.checkpoint(state.step, path, manifest, state.checkpoint_metrics())
        self.reporter.event(f"Checkpoint saved at step {state.step}", data={"step": state.step})


def run(
    spec: JobSpec,
    model_dir: Path,
    rows: list[dict[str, Any]] | RowSource,
    validation_rows: list[dict[str, Any]] | RowSource | None,
    out_dir: Path,
    reporter: Reporter,
    *,
    resume: bool = True,
    attempt: int = 1,
    init_adapter: Path | None = None,
    prepared: PreparedCache | None = None,
    host_memory: HostMemoryPolicy = HostMemoryPolicy.AUTO,
) -> RunResult:
    # ---- setup
    clock = PhaseClock()
    device = pick_device()
    set_seed(spec.seed)
    method = method_for(spec, reporter)
    with clock.timed(Phase.DATA):
        # Files are tokenized once into a store under `prepared` (the worker's: the artifact store);
        # rows that are not a stored file are prepared under the run's folder, for this run only.
        data = prepare_data(
            spec, model_dir, rows, validation_rows, reporter, method, cache=prepared, scratch=out_dir / ".prepared"
        )
    # Before loading: loading's temporaries are large blocks too (host_memory.py).
    host = HostMemory.start(host_memory, device, model_dir)
    with clock.timed(Phase.LOAD):
        model = prepare_model(spec, model_dir, data.labels, device, reporter)
    plan = plan_steps(spec, len(data.train.examples))
    optimizer = build_optimizer(
        spec.optimizer, param_groups(model, spec.training.weight_decay), spec.training.learning_rate
    )
    scheduler = build_scheduler(spec.scheduler, optimizer, plan.total_steps)
    early = EarlyStopping(spec.training.early_stopping)
    r = Run(
        spec=spec,
        method=method,
        data=data,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        plan=plan,
        device=device,
        reporter=reporter,
        out_dir=out_dir,
        adapter_meta={
            "task": spec.task,
            "base_model": model_dir.name,
            "labels": data.labels,
            # transformers' names, for `AutoModelForSequenceClassification.from_pretrained(base, **these)`
            "id2label": {str(i): name for i, name in enumerate(data.labels)} if data.labels else None,
            "label2id": {name: i for i, name in enumerate(data.labels)} if data.labels else None,
            "label_normalization": {"mean": data.norm[0], "std": data.norm[1]} if data.norm else None,
        },
        early=early,
        watchdog=LossWatchdog(spec.training.loss_watchdog),
        loss=method.make_loss(data.train, data.tokenizer, device),
        clock=clock,
        host=host,
        budget=EvalBudget(
            # An explicit eval_every is a cadence the user (or a sweep's pruner) asked for: run in full.
            spec.training.eval_budget if spec.training.eval_every is None else None,
            clock,
            plan.total_steps,
            # Evaluations whose result steers training run whatever they cost: skipping one by the
            # clock would make the adapter depend on the machine's speed (and ranks must agree).
            evaluations_required=(
                early.spec is not None or isinstance(scheduler, ReduceLROnPlateau) or ddp.world_size() > 1
            ),
            will_sample=bool(data.sample_prompts) and ddp.is_main(),
            has_validation=bool(data.validation.examples),
        ),
    )
    state = TrainState()

    # ---- start from an earlier adapter (continued training); a checkpoint of this job wins below
    if init_adapter is not None:
        start = load_file(str(init_adapter / "adapter_model.safetensors"))
        set_peft_model_state_dict(model, start)
        if method.uses_reference:  # measured against where it started, not the base (reference.py)
            keep_as_reference(model, start)
        reporter.event(
            f"Starting from the adapter of {spec.from_checkpoint}", data={"from_checkpoint": spec.from_checkpoint}
        )

    # ---- resume
    if resume:
        _resume(r, state, attempt)
    if ddp.world_size() > 1:
        _check_divisible(spec, ddp.world_size())
        ddp.sync_params(model)
    if state.step == 0 and data.validation.examples:
        _baseline(r, state)
    if state.step == 0:
        r.sample(0)  # the base model's answers: the "before"
    t = spec.training
    reporter.event(
        f"Training started: {plan.total_steps} steps ({plan.steps_per_epoch} per epoch), batch {t.batch_size} x "
        f"{t.gradient_accumulation_steps} accumulation, {spec.optimizer.name}, {spec.scheduler.name} schedule",
        data={"total_steps": plan.total_steps, "steps_per_epoch": plan.steps_per_epoch},
    )
    reporter.progress(state.step, plan.total_steps, state.epoch + state.micro_in_epoch / plan.micro_per_epoch)

    # ---- loop
    try:
        _train(r, state)
    except StopTraining:
        _report_phases(r, "Stopped after")  # a pause, cancel or shutdown: this attempt's time
        raise

    # ---- finish
    return _finish(r, state)


def _check_divisible(spec: JobSpec, devices: int) -> None:
    if spec.training.batch_size % devices:
        raise TrainingError(
            ErrorCode.INVALID_SPEC,
            f"training.batch_size ({spec.training.batch_size}) is the global micro-batch and must be divisible by "
            f"the worker's {devices} devices per job.",
            "training.batch_size",
        )


def _resume(r: Run, state: TrainState, attempt: int) -> None:
    """Continue from the last complete checkpoint, if an earlier attempt left one."""
    latest = ckpt.latest_complete(r.checkpoints)
    if latest is None:
        if r.checkpoints.is_dir() and any(r.checkpoints.glob(".tmp-*")):
            r.reporter.event("Ignored an incomplete checkpoint left by an interrupted write", level="warn")
        return
    saved = ckpt.load_trainer_state(latest)
    set_peft_model_state_dict(r.model, load_file(str(latest / "adapter" / "adapter_model.safetensors")))
    r.optimizer.load_state_dict(saved["optimizer"])
    r.scheduler.load_state_dict(saved["scheduler"])
    ckpt.set_rng_state(saved["rng"])
    state.restore(saved)
    r.early.restore(saved["best_metric"], saved["best_step"])
    state.baseline_eval = saved.get("baseline_eval") or {}
    r.reporter.event(
        f"Resumed from step {state.step} (attempt {attempt})",
        data={"step": state.step, "attempt": attempt, "checkpoint": latest.name},
    )


def _baseline(r: Run, state: TrainState) -> None:
    """Evaluate once before the first step: `eval_loss` at step 0, the "before" of the job's result.
    Evaluation draws no random numbers, so a run with a baseline trains exactly as one without."""
    state.baseline_eval = r.evaluate(phase=Phase.BASELINE)
    r.reporter.metrics(
        {
            "step": 0,
            "epoch": 0.0,
            "eval_loss": state.baseline_eval["eval_loss"],
            "extra": _eval_extra(state.baseline_eval),
        }
    )
    r.reporter.event(
        f"Baseline evaluation before training: {format_metrics(state.baseline_eval)}",
        data={"step": 0, **state.baseline_eval},
    )
    r.model.train()


# An evaluation's metrics that a training step also logs, under the same name, from other completions
# (a reinforcement step's sampled ones; the evaluation's are greedy, on validation prompts): in the
# evaluation's series point they carry OpenAI's `valid_` prefix, so one series never mixes the two.
_ALSO_LOGGED_BY_STEPS = ("reward", "reward_std", "mean_completion_length", "grader_seconds", "grader_errors")


def _eval_extra(metrics: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's metrics as a series point's `extra`, with OpenAI's name for token accuracy."""
    extra = {k: v for k, v in metrics.items() if k not in _ALSO_LOGGED_BY_STEPS}
    extra.update({f"valid_{k}": metrics[k] for k in _ALSO_LOGGED_BY_STEPS if k in metrics})
    if "mean_token_accuracy" in metrics:
        extra["valid_mean_token_accuracy"] = metrics["mean_token_accuracy"]
    return extra


def _train(r: Run, state: TrainState) -> None:
    r.budget.start_training(state.step)
    with r.clock.timed(Phase.TRAINING):  # less the evaluations, samples and checkpoints inside it
        _loop(r, state)


def _loop(r: Run, state: TrainState) -> None:
    t = r.spec.training
    lengths = example_lengths(r.data.train.examples) if t.group_by_length else None
    window = MetricWindow(r.device)
    r.model.train()
    while state.step < r.plan.total_steps and not state.stopped_early:
        order = batch_order(len(r.data.train.examples), t.batch_size, r.spec.seed, state.epoch, lengths)
        while state.micro_in_epoch < len(order) and state.step < r.plan.total_steps:
            lr, grad_norm = _optimizer_step(r, state, order, window)
            if (tight := r.host.after_step(state.step)) is not None:
                r.reporter.event(tight, level="warn", data={"host_memory": r.host.switched_at})
            epoch = state.epoch + state.micro_in_epoch / len(order)
            if state.step % t.logging_every == 0 or state.step == r.plan.total_steps:
                point = window.point(state.step, epoch, lr, float(grad_norm), state.tokens_seen)
                if (extra := r.loss.take_metrics()) is not None:  # e.g. DPO's rewards and accuracy
                    point["extra"] = {**point.get("extra", {}), **extra}
                state.last_loss = point["loss"]
                state.last_train_accuracy = point.get("extra", {}).get("train_mean_token_accuracy")
                r.reporter.metrics(point)
                r.watchdog.check(point["loss"], state.step)
            r.reporter.progress(state.step, r.plan.total_steps, epoch)
            paused_from = time.perf_counter()
            _evaluate_and_save(r, state, epoch)
            window.pause(time.perf_counter() - paused_from)
            reason = r.reporter.stop_requested()
            if ddp.world_size() > 1:
                reason = ddp.agree_on_stop(reason, r.device)
            if reason is not None:
                if reason in (StopReason.SHUTDOWN, StopReason.PAUSED) and not _is_save_step(r, state.step):
                    r.save(state)  # a rolling deploy or a pause: keep this step's work for the next attempt
                raise StopTraining(reason)
            if state.stopped_early:
                break
        if state.micro_in_epoch >= len(order):
            state.epoch, state.micro_in_epoch = state.epoch + 1, 0


def _optimizer_step(
    r: Run, state: TrainState, order: list[list[int]], window: MetricWindow
) -> tuple[float, torch.Tensor]:
    """One optimizer step: gradient_accumulation_steps micro-batches (fewer at an epoch's end).
    Returns the learning rate it used and the gradient norm before clipping."""
    t = r.spec.training
    group_end = min(len(order), state.micro_in_epoch + t.gradient_accumulation_steps)
    n_micro = group_end - state.micro_in_epoch
    if ddp.world_size() > 1:
        _micro_batches_distributed(r, state, order, group_end, n_micro, window)
    for i in range(state.micro_in_epoch, group_end):
        examples = [r.data.train.examples[j] for j in order[i]]
        n_real = sum(len(ex["input_ids"]) for ex in examples)  # host-side: no device sync
        batch = {k: v.to(r.device) for k, v in r.method.collate(examples, r.data.pad_id).items()}
        loss = r.loss(r.model, batch) / n_micro
        loss.backward()
        window.add(loss, n_real)
        if r.loss.last_accuracy is not None:
            window.add_accuracy(*r.loss.last_accuracy)
        state.tokens_seen += n_real
    state.micro_in_epoch = group_end
    if t.max_grad_norm:
        grad_norm = torch.nn.utils.clip_grad_norm_(r.model.parameters(), t.max_grad_norm)
    else:
        grad_norm = _grad_norm(r.model)
    lr = float(r.optimizer.param_groups[0]["lr"])
    r.optimizer.step()
    scheduler_step_per_batch(r.scheduler)
    r.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    window.end_step()
    return lr, grad_norm


def _micro_batches_distributed(
    r: Run, state: TrainState, order: list[list[int]], group_end: int, n_micro: int, window: MetricWindow
) -> None:
    """The step's micro-batches, each split across the ranks; one all-reduce for the gradients, the
    loss and the token count. Leaves `state.micro_in_epoch` at `group_end`."""
    step_loss = torch.zeros((), device=r.device)
    tokens = 0
    for i in range(state.micro_in_epoch, group_end):
        examples = [r.data.train.examples[j] for j in ddp.shard(order[i])]
        if not examples:
            continue  # an epoch's short last micro-batch: fewer examples than ranks
        tokens += sum(len(ex["input_ids"]) for ex in examples)
        batch = {k: v.to(r.device) for k, v in r.method.collate(examples, r.data.pad_id).items()}
        loss = r.loss(r.model, batch) / n_micro
        loss.backward()
        step_loss += loss.detach()
    mean_loss, total_tokens = ddp.all_reduce_step(r.model, step_loss, tokens, contributed=tokens > 0)
    window.add(mean_loss, total_tokens)
    state.tokens_seen += total_tokens
    state.micro_in_epoch = group_end


def _evaluate_and_save(r: Run, state: TrainState, epoch: float) -> None:
    step = state.step
    due = bool(r.data.validation.examples) and (step % r.plan.eval_every == 0 or step == r.plan.total_steps)
    if due and not r.budget.allows_evaluation(step):
        _note_skip(r, step)
    elif due:
        state.last_eval = r.evaluate()
        r.reporter.metrics(
            {
                "step": step,
                "epoch": round(epoch, 4),
                "eval_loss": state.last_eval["eval_loss"],
                "extra": _eval_extra(state.last_eval),
            }
        )
        r.reporter.event(
            f"Evaluation at step {step}: {format_metrics(state.last_eval)}", data={"step": step, **state.last_eval}
        )
        scheduler_step_on_eval(r.scheduler, state.last_eval["eval_loss"])
        if r.early.should_stop(state.last_eval["eval_loss"], step, r.model):
            message, data = r.early.stop_event(step)
            r.reporter.event(message, data=data)
            state.stopped_early = True
        if r.budget.allows_samples(step):
            r.sample(step)
        else:
            _note_skip(r, step)
        r.model.train()
    if _is_save_step(r, step) and step < r.plan.total_steps:
        r.save(state)


def _note_skip(r: Run, step: int) -> None:
    """The first time the budget skips something, say so once (the phase event at the end counts them)."""
    if sum(r.budget.skipped.values()) != 1 or not ddp.is_main():
        return
    share = r.spec.training.eval_budget
    r.reporter.event(
        f"From step {step}, evaluations or samples that would take them over {share:.0%} of the run's time "
        "are skipped (training.eval_budget); the last ones still run",
        data={"step": step, "eval_budget": share},
    )


def _report_phases(r: Run, how: str) -> None:
    """One event with where this attempt's time went (`data["phases"]`), from rank 0."""
    if not ddp.is_main():
        return
    r.reporter.event(
        f"{how} {r.clock.summary()}",
        data={**r.clock.breakdown(), "eval_budget": r.spec.training.eval_budget, "skipped": dict(r.budget.skipped)},
    )


def _is_save_step(r: Run, step: int) -> bool:
    every = r.spec.training.save_every
    return bool(every and step % every == 0)


def _finish(r: Run, state: TrainState) -> RunResult:
    """Keep the best adapter if early stopping watched the run, save, test, and publish."""
    if r.early.best_state is not None and r.early.best_step != state.step:
        set_peft_model_state_dict(r.model, r.early.best_state)
        r.reporter.event(
            f"Keeping the best adapter, from step {r.early.best_step} (eval_loss {r.early.best_metric:.4f})",
            data={"best_step": r.early.best_step, "best_eval_loss": r.early.best_metric},
        )
        state.last_eval = r.evaluate() if r.data.validation.examples else {}
        r.sampled_at = None  # the kept adapter is not the one sampled at this step
    r.sample(state.step)
    r.save(state)
    final_metrics: dict[str, Any] = {"train_loss": state.last_loss, "steps": state.step}
    if state.last_train_accuracy is not None:
        final_metrics["train_mean_token_accuracy"] = state.last_train_accuracy
    if state.last_eval:
        final_metrics["validation"] = state.last_eval
    if state.baseline_eval:
        final_metrics["baseline"] = state.baseline_eval
    if state.baseline_eval and state.last_eval:
        before, after = state.baseline_eval["eval_loss"], state.last_eval["eval_loss"]
        final_metrics["validation_loss_change"] = {"before": before, "after": after}
        r.reporter.event(
            f"Validation loss {before:.4f} → {after:.4f} (step 0 → step {state.step})",
            data={"validation_loss_before": before, "validation_loss_after": after, "step": state.step},
        )
    if r.data.test.examples:
        final_metrics["test"] = r.evaluate("test")
        r.reporter.event(f"Test evaluation: {format_metrics(final_metrics['test'])}", data=final_metrics["test"])
    if not ddp.is_main():
        return RunResult(r.out_dir / "adapter", {}, state.tokens_seen, state.step, final_metrics)
    with r.clock.timed(Phase.PUBLISH):
        adapter_dir, manifest = publish_adapter(r.model, r.out_dir, r.adapter_meta)
    _report_phases(r, "Finished in")
    return RunResult(adapter_dir, manifest, state.tokens_seen, state.step, final_metrics)


def _grad_norm(model: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())

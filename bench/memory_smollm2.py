"""Where a real model's QLoRA job spends host memory on the CPU, phase by phase, before and after the
fixes: the causal-LM loss (tuneforge/worker/training/lm_loss.py), glibc's mmap threshold
(`host_memory=lean`, tuneforge/worker/training/host_memory.py) and the LoRA dropout's mask
(tuneforge/worker/training/dropout.py).

    python -m bench.memory_smollm2 [--workloads sms,shakespeare] [--steps 2] [--record]

SmolLM2-135M-Instruct, 4-bit NF4 + double quant, LoRA r=16 all-linear (dropout 0.05, the default),
AdamW, batch 8, through Tuneforge's own `run()`, each measurement in a fresh process. Two workloads:
`sms`, the demo's chat rows (loss on the one-word answer only, ~100 tokens a row), and `shakespeare`,
plain text cut to 256 tokens (loss on every token: the worst case for logits).

Variants (each patched in its own child process only), each adding one fix to the one before:
- `before`: the engine before these fixes: transformers' own loss (`model(**batch, labels=...)`:
  logits at every position, upcast to fp32, a fp32 log-softmax kept for backward), token accuracy
  on those full logits, glibc's default (dynamic) mmap threshold, torch's CPU dropout;
- `loss`: the new loss (logits only where a token is trained on, chunked cross-entropy);
- `malloc`: and a fixed 1 MiB mmap threshold, so freed activations leave the process;
- `after`: and LoRA dropout with a bool mask: the engine as it is now;
- `after+gc`: the same with `training.gradient_checkpointing` (a spec option, off by default).

Per phase, a sampler thread (2 ms) keeps the peak of the process's RSS and of its anonymous RSS
(memory it owns, not the checkpoint's file pages). One training batch is also broken down by what its
autograd graph saves for the backward pass, by the module that saved it (storages counted once).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import SHARED_DATA, in_fresh_process, print_result, proc_status, record
from bench.smollm2 import DEFAULT_MODELS, DESCRIPTION, load_average, model_dir

MIB = 1024**2
PHASES = ("imports", "data", "load", "baseline eval", "forward", "backward", "optimizer", "final eval", "save", "other")
VARIANTS = ("before", "loss", "malloc", "after", "after+gc")
WORKLOADS = {"sms": "SMS chat rows (loss on the answer)", "shakespeare": "Shakespeare, 256-token rows"}
BATCH = 8


class PhasePeaks:
    """Peak RSS and anonymous RSS per phase; `phase` is switched by the hooks below."""

    def __init__(self) -> None:
        self.phase = "imports"
        self.peaks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.take()

    def take(self) -> None:
        peak = self.peaks[self.phase]
        peak[0] = max(peak[0], proc_status("VmRSS"))
        peak[1] = max(peak[1], proc_status("RssAnon"))

    def enter(self, phase: str) -> None:
        self.take()
        self.phase = phase
        self.take()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.take()


def category(module_name: str) -> str:
    """What a saved tensor belongs to, from the innermost module that was running when it was saved."""
    if "lora_" in module_name:
        return "LoRA branches (dropout, A/B inputs)"
    if "self_attn" in module_name:
        return "attention (q/k/v, RoPE, SDPA)"
    if "mlp" in module_name:
        return "MLP (gate/up/act, fp32)"
    if "norm" in module_name:
        return "RMSNorms (fp32)"
    if "layers." in module_name or "embed" in module_name or "rotary" in module_name:
        return "embeddings, RoPE tables, residual adds"
    # The head, our loss (outside any module) and the wrappers' bodies (transformers' own loss).
    return "output head, logits and loss"


def saved_breakdown(model: Any, fn: Any) -> tuple[Any, dict[str, int]]:
    """Run `fn()` (one forward pass) recording what autograd saves, by category; returns fn's result."""
    import torch

    stack: list[str] = ["<loss>"]
    handles = []

    def enter(name: str) -> Any:
        def hook(_module: Any, _args: Any) -> None:
            stack.append(name)

        return hook

    def leave(_module: Any, _args: Any, _out: Any) -> None:  # returns None: the output stays as it is
        stack.pop()

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    seen: set[int] = set()
    sizes: dict[str, int] = defaultdict(int)

    def pack(t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.nn.Parameter) or (not t.requires_grad and t._base is not None and t._base.is_leaf):
            return t  # parameters and views of them (a frozen weight's transpose) are not activations
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            sizes[category(stack[-1])] += storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn()
    finally:
        for h in handles:
            h.remove()
    return out, dict(sizes)


def legacy_causal_lm_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The engine's causal-LM loss before lm_loss.py: transformers' loss on full-vocabulary logits at
    every position, and token accuracy from the same logits."""
    import torch

    from tuneforge.worker.training.data import IGNORE

    out = model(**batch)
    with torch.no_grad():
        target = batch["labels"][:, 1:]
        mask = target != IGNORE
        correct = ((out.logits.detach()[:, :-1].argmax(-1) == target) & mask).sum()
    return out.loss, correct, mask.sum()


def workload_rows(name: str, n: int) -> list[dict[str, Any]]:
    if name == "sms":
        from tuneforge.app.demo.sms_task import balanced_split, chat_row, load_rows

        train, _ = balanced_split(load_rows(), n, 0, seed=0)
        return [chat_row(r) for r in train]
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text()
    width = 256 * 6  # longer than 256 tokens: every row is cut to a full window
    return [{"text": text[i * width : (i + 1) * width]} for i in range(n)]


def child(args: dict[str, Any]) -> None:
    """One measurement in its own process; prints one RESULT line."""
    peaks = PhasePeaks()
    peaks.start()
    import resource

    import torch
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from tuneforge.app.jobs.request import JobCreate
    from tuneforge.worker.training import evaluation, losses, setup
    from tuneforge.worker.training import run as run_mod
    from tuneforge.worker.training.host_memory import HostMemoryPolicy
    from tuneforge.worker.training.reporter import MemoryReporter

    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    variant = args["variant"]
    if variant == "before":
        losses.causal_lm_loss = legacy_causal_lm_loss
        evaluation.causal_lm_loss = legacy_causal_lm_loss
    host_memory = HostMemoryPolicy.FAST if variant in ("before", "loss") else HostMemoryPolicy.LEAN
    if variant in ("before", "loss", "malloc"):
        setup.compact_lora_dropout = lambda model, device: 0

    # Phase switches: the model load (an event), the loss call (forward, then backward until the
    # optimizer steps), the optimizer step (until the next step's logging: "other"), the evaluations,
    # and after the final one the checkpoint and the adapter's publication ("save").
    class Reporter(MemoryReporter):
        def event(self, message: str, **kw: Any) -> None:
            if message.startswith("Loading model"):
                peaks.enter("load")
            super().event(message, **kw)

        def metrics(self, point: dict[str, Any]) -> None:
            if peaks.phase == "optimizer":
                peaks.enter("other")
            super().metrics(point)

    breakdown: dict[str, int] = {}
    real_call = losses.TaskLoss.__call__

    def call(self: Any, model: Any, batch: dict[str, Any]) -> Any:
        peaks.enter("forward")
        if not breakdown:
            loss, sizes = saved_breakdown(model, lambda: real_call(self, model, batch))
            breakdown.update(sizes)
            breakdown["tokens"] = int(batch["input_ids"].numel())
        else:
            loss = real_call(self, model, batch)
        peaks.enter("backward")
        return loss

    losses.TaskLoss.__call__ = call  # type: ignore[method-assign]
    register_optimizer_step_pre_hook(lambda *_: peaks.enter("optimizer"))
    real_evaluate = run_mod.Run.evaluate
    evaluated = [0]

    def evaluate(*a: Any, **kw: Any) -> Any:
        final = evaluated[0] > 0
        evaluated[0] += 1
        peaks.enter("final eval" if final else "baseline eval")
        try:
            return real_evaluate(*a, **kw)
        finally:
            peaks.enter("save" if final else "other")

    run_mod.Run.evaluate = evaluate  # type: ignore[method-assign]

    steps = args["steps"]
    rows = workload_rows(args["workload"], BATCH * steps + BATCH)
    spec = JobCreate.model_validate(
        {
            "model": "smollm2",
            "training_file": "bench",
            "seed": 0,
            "training": {
                "max_steps": steps,
                "batch_size": BATCH,
                "max_seq_length": 256,
                "gradient_checkpointing": variant == "after+gc",
            },
        }
    ).resolve()
    peaks.enter("data")
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run_mod.run(
            spec, Path(args["model_dir"]), rows[BATCH:], rows[:BATCH], Path(out), Reporter(), host_memory=host_memory
        )
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peaks.stop()
    out_line = {
        "peaks": dict(peaks.peaks),
        "saved": breakdown,
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
        "wall": wall,
        "cpu": cpu,
        "train_loss": result.final_metrics["train_loss"],
        "eval_loss": result.final_metrics["validation"]["eval_loss"],
        "baseline_loss": result.final_metrics["baseline"]["eval_loss"],
    }
    print_result(out_line)


def measure(model: Path, workload: str, variant: str, steps: int, threads: int | None) -> dict[str, Any]:
    payload = {"model_dir": str(model), "workload": workload, "variant": variant, "steps": steps, "threads": threads}
    load = load_average()
    result = in_fresh_process("bench.memory_smollm2", payload, f"{workload}/{variant}")
    return {**result, "load": f"{load} -> {load_average()}"}


def mib(n: float) -> str:
    return f"{n / MIB:,.0f}"


def table(workload: str, results: dict[str, dict[str, Any]]) -> list[str]:
    variants = [v for v in VARIANTS if v in results]
    first = results[variants[0]]
    tokens = first["saved"].get("tokens", 0)
    lines = [
        f"**{WORKLOADS[workload]}**, batch {BATCH} (first batch {tokens:,} token positions). "
        "Peak RSS per phase, MiB (anonymous in brackets):",
        "",
        "| phase | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for phase in PHASES:
        cells = []
        for v in variants:
            rss, anon = results[v]["peaks"].get(phase, (0, 0))
            cells.append(f"{mib(rss)} ({mib(anon)})" if rss else "")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append(
        "| **whole run (ru_maxrss)** | " + " | ".join(f"**{mib(results[v]['max_rss'])}**" for v in variants) + " |"
    )
    base = results[variants[0]]["max_rss"]
    lines.append("| vs before | " + " | ".join(f"{results[v]['max_rss'] / base:.2f}x" for v in variants) + " |")
    lines += [
        "",
        "Saved for backward by the first training batch, MiB:",
        "",
        "| saved by | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    cats = sorted(
        {c for v in variants for c in results[v]["saved"] if c != "tokens"}, key=lambda c: -first["saved"].get(c, 0)
    )
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(mib(results[v]["saved"].get(c, 0)) for v in variants) + " |")
    totals = [sum(x for k, x in results[v]["saved"].items() if k != "tokens") for v in variants]
    lines.append("| **total** | " + " | ".join(f"**{mib(t)}**" for t in totals) + " |")
    lines += [
        "",
        "| | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
        "| train loss (last step) | " + " | ".join(f"{results[v]['train_loss']:.4f}" for v in variants) + " |",
        "| eval loss before -> after | "
        + " | ".join(f"{results[v]['baseline_loss']:.4f} -> {results[v]['eval_loss']:.4f}" for v in variants)
        + " |",
        "| wall / CPU s | "
        + " | ".join(f"{results[v]['wall']:,.0f} / {results[v]['cpu']:,.0f}" for v in variants)
        + " |",
        "| load average | " + " | ".join(results[v]["load"] for v in variants) + " |",
        "",
    ]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="sms,shakespeare", help=f"comma-separated, from {', '.join(WORKLOADS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per child (default: torch's). On a shared machine 1 avoids OpenMP threads spinning "
        "while their partner waits for a core, which inflates CPU time; memory is not affected",
    )
    p.add_argument("--record", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0

    model = model_dir(args.models_dir)
    lines = [
        f"{DESCRIPTION}, 4-bit NF4 + double quant, LoRA r=16 all-linear (dropout 0.05), AdamW, batch {BATCH}, "
        f"max 256 tokens, {args.steps} steps, 8 validation rows, each variant in a fresh process. `before` = "
        "transformers' loss on full-vocabulary logits, glibc's default malloc, torch's CPU dropout (the engine "
        "until these fixes); each next column adds one fix: `loss` = tuneforge/worker/training/lm_loss.py; "
        "`malloc` = a fixed 1 MiB mmap threshold (`return_large_blocks_to_the_os`); "
        "`after` = LoRA dropout with a bool mask "
        "(tuneforge/worker/training/dropout.py), the engine as it is; `after+gc` = the same with "
        "`training.gradient_checkpointing`." + (f" Torch threads per process: {args.threads}." if args.threads else ""),
        "",
    ]
    for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        results: dict[str, dict[str, Any]] = {}
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            print(f"{workload} / {variant} ...", flush=True)
            results[variant] = measure(model, workload, variant, args.steps, args.threads)
            print(json.dumps(results[variant]), flush=True)
        lines += table(workload, results)
    record("Memory: where a SmolLM2 QLoRA job's host memory goes (CPU), before and after the fixes", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What two CPU settings cost a QLoRA training step: glibc's allocator, and the compute dtype.

    python -m bench.cpu_step [--workloads sms,shakespeare] [--variants mmap,heap,heap+trim,mmap+thp,bf16]
                             [--steps 6] [--repeats 2] [--record]

SmolLM2-135M-Instruct, 4-bit NF4 + double quant, LoRA r=16 all-linear, AdamW, batch 8, max 256
tokens, through Tuneforge's own `run()` with no validation set (so only training steps are timed),
each run in a fresh process, the variants interleaved `--repeats` times so that a drift in the
machine's speed does not favour one of them. The baseline is the engine as it is (`mmap`); each
other variant changes one thing:

- `mmap`: the engine with `host_memory=lean`: a fixed 1 MiB mmap threshold (`return_large_blocks_to_the_os`),
  so every large activation is a fresh mapping, returned when freed, whose pages the kernel must
  zero; the compute dtype `auto`;
- `heap`: the engine with `host_memory=fast` (what `auto` starts with): the threshold fixed at 32 MiB,
  where glibc's default heuristic ends up (it raises its 128 KiB threshold to the largest block freed,
  up to 32 MiB), so activations come from the heap, where freed memory stays (bench/memory_smollm2.py:
  7 GB held between steps);
- `heap+trim`: the same, plus `malloc_trim(0)` after every optimizer step (hands the heap's free
  pages back between steps; the step's own peak is the heap's);
- `mmap+thp`: `mmap` with glibc's `glibc.malloc.hugetlb=1` tunable (set in the child's environment:
  glibc reads it at start), so its mappings are advised as transparent huge pages (where the kernel's
  THP mode is `madvise`), and a 2 MiB page is faulted in where 512 small ones were;
- `bf16`: `quantization.compute_dtype: bfloat16` pinned. `auto` picks it on a CPU with native bf16
  (AVX512-BF16 or AMX) and fp32 elsewhere (tuneforge/worker/training/configs.py), so on such a CPU this
  variant is the baseline again, and on the others it shows what emulated bf16 costs.

Per run: the time of each optimizer step from the reporter's progress calls (the first step is
reported apart: it includes one-off warm-up), system CPU time and minor page faults per step (where a
mapping's cost shows), the process's peak RSS and its RSS between steps.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import itertools
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import in_fresh_process, print_result, proc_status, record
from bench.memory_smollm2 import BATCH, WORKLOADS, workload_rows
from bench.smollm2 import DEFAULT_MODELS, DESCRIPTION, load_average, model_dir

VARIANTS = ("mmap", "heap", "heap+trim", "mmap+thp", "bf16")
MIB = 1024**2


def child(args: dict[str, Any]) -> None:
    """One run in its own process; prints one RESULT line."""
    import torch

    from tuneforge.app.jobs.request import JobCreate
    from tuneforge.worker.training import run as run_mod
    from tuneforge.worker.training.configs import compute_dtype
    from tuneforge.worker.training.host_memory import HostMemoryPolicy
    from tuneforge.worker.training.reporter import MemoryReporter

    variant = args["variant"]
    host_memory = HostMemoryPolicy.FAST if variant.startswith("heap") else HostMemoryPolicy.LEAN
    trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim if variant == "heap+trim" else None

    marks: list[tuple[float, float, int, int]] = []  # (wall, system CPU, minor faults, RSS) at each step's end

    def mark() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        marks.append((time.perf_counter(), usage.ru_stime, usage.ru_minflt, proc_status("VmRSS")))

    class Reporter(MemoryReporter):
        def progress(self, step: int, total_steps: int, epoch: float) -> None:
            super().progress(step, total_steps, epoch)
            if trim is not None and step > 0:
                trim(0)
            mark()  # the first call comes before step 1, after loading

    steps = args["steps"]
    rows = workload_rows(args["workload"], BATCH * steps)
    spec = JobCreate.model_validate(
        {
            "model": "smollm2",
            "training_file": "bench",
            "seed": 0,
            "training": {"max_steps": steps, "batch_size": BATCH, "max_seq_length": 256},
            "quantization": {"compute_dtype": "bfloat16" if variant == "bf16" else "auto"},
        }
    ).resolve()
    dtype = str(compute_dtype(spec.quantization, torch.device("cpu"))).removeprefix("torch.")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run_mod.run(spec, Path(args["model_dir"]), rows, None, Path(out), Reporter(), host_memory=host_memory)
    wall = time.perf_counter() - t0
    per_step = [
        {"wall": b[0] - a[0], "sys": b[1] - a[1], "faults": b[2] - a[2], "rss_after": b[3]}
        for a, b in itertools.pairwise(marks)
    ]
    out_line = {
        "steps": per_step,
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "wall": wall,
        "train_loss": result.final_metrics["train_loss"],
        "dtype": dtype,
    }
    print_result(out_line)


def measure(model: Path, workload: str, variant: str, steps: int) -> dict[str, Any]:
    payload = {"model_dir": str(model), "workload": workload, "variant": variant, "steps": steps}
    load = load_average()
    # glibc reads its tunables once, at start: the THP variant sets them in the child's environment.
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"} if variant == "mmap+thp" else None
    result = in_fresh_process("bench.cpu_step", payload, f"{workload}/{variant}", env)
    return {**result, "load": f"{load} -> {load_average()}"}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over every run of one variant: steps after the first pooled, then medians."""
    later = [s for r in runs for s in r["steps"][1:]]
    return {
        "first": statistics.median(r["steps"][0]["wall"] for r in runs),
        "step": statistics.median(s["wall"] for s in later),
        # Each run trains the same batches in the same order (same seed), whose lengths differ from
        # step to step: the total over the later steps compares variants batch for batch.
        "later_total": statistics.median(sum(s["wall"] for s in r["steps"][1:]) for r in runs),
        "step_min": min(s["wall"] for s in later),
        "step_max": max(s["wall"] for s in later),
        "sys": statistics.median(s["sys"] for s in later),
        "faults": statistics.median(s["faults"] for s in later),
        "rss_between": statistics.median(s["rss_after"] for s in later),
        "max_rss": max(r["max_rss"] for r in runs),
        "wall": statistics.median(r["wall"] for r in runs),
        "loss": runs[0]["train_loss"],
        "dtype": runs[0]["dtype"],
    }


def table(workload: str, results: dict[str, list[dict[str, Any]]], steps: int) -> list[str]:
    sums = {v: summary(r) for v, r in results.items()}
    names = list(sums)
    base = sums[names[0]]
    rows = [
        ("compute dtype", lambda s: str(s["dtype"])),
        ("first step, s (median)", lambda s: f"{s['first']:.1f}"),
        (
            f"a later step, s (median of {steps - 1} x runs; min-max)",
            lambda s: f"{s['step']:.2f} ({s['step_min']:.2f}-{s['step_max']:.2f})",
        ),
        ("later steps, total s (median of runs)", lambda s: f"{s['later_total']:.1f}"),
        (f"later steps vs {names[0]}", lambda s: f"{s['later_total'] / base['later_total']:.2f}x"),
        ("system CPU s per step", lambda s: f"{s['sys']:.2f}"),
        ("minor page faults per step", lambda s: f"{s['faults']:,.0f}"),
        ("RSS between steps, MiB", lambda s: f"{s['rss_between'] / MIB:,.0f}"),
        ("peak RSS, MiB", lambda s: f"{s['max_rss'] / MIB:,.0f}"),
        ("whole run, s (median)", lambda s: f"{s['wall']:.0f}"),
        ("train loss (last step)", lambda s: f"{s['loss']:.4f}"),
    ]
    n = len(next(iter(results.values())))
    lines = [
        f"**{WORKLOADS[workload]}**, {n} runs per variant:",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {label} | " + " | ".join(fmt(sums[v]) for v in names) + " |" for label, fmt in rows]
    loads = "; ".join(f"{v}: " + ", ".join(r["load"] for r in runs) for v, runs in results.items())
    return [*lines, "", f"Load average before -> after each run: {loads}.", ""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="sms,shakespeare", help=f"comma-separated, from {', '.join(WORKLOADS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is reported apart)")
    p.add_argument("--repeats", type=int, default=2, help="runs per variant, interleaved")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--record", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.steps < 2:
        p.error("--steps must be at least 2: the first step is reported apart")

    model = model_dir(args.models_dir)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    lines = [
        f"{DESCRIPTION}, 4-bit NF4 + double quant, LoRA r=16 all-linear, AdamW, batch {BATCH}, max 256 tokens, "
        f"{args.steps} optimizer steps per run, no validation set, each run in a fresh process, the variants "
        "interleaved. `mmap` = the engine with `host_memory=lean` (a fixed 1 MiB mmap threshold, "
        "`return_large_blocks_to_the_os`; compute dtype `auto`); `heap` = `host_memory=fast` (a fixed 32 MiB "
        "threshold); `heap+trim` = the same plus `malloc_trim(0)` after every optimizer step; `mmap+thp` = "
        "`mmap` with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`; `bf16` = the "
        "engine with `quantization.compute_dtype: bfloat16` pinned.",
        "",
    ]
    for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for repeat in range(args.repeats):
            for variant in variants:
                print(f"{workload} / {variant} / run {repeat + 1} ...", flush=True)
                res = measure(model, workload, variant, args.steps)
                results[variant].append(res)
                print(
                    "  steps: "
                    + ", ".join(f"{s['wall']:.2f} s" for s in res["steps"])
                    + f"; peak {res['max_rss'] / MIB:,.0f} MiB",
                    flush=True,
                )
        lines += table(workload, results, args.steps)
    record(
        "Speed: what the allocator and the compute dtype cost a CPU training step (SmolLM2 QLoRA)", lines, args.record
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

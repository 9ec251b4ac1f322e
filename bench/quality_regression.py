"""Regression: predict an SMS message's length in words from its text, with QLoRA on all-MiniLM-L6-v2.

    python bench/quality_regression.py [--record]

A derived target from ../shared/data/sms_spam.jsonl (the word count, capped at 60). The bar: the
test MAE beats predicting the training mean.
"""

from __future__ import annotations

import argparse

from bench.common import record, sms_rows, train_minilm
from tuneforge.app.jobs.request import JobCreate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="store_true")
    p.add_argument("--rows", type=int, default=2000)
    args = p.parse_args()
    raw = sms_rows()[: args.rows]
    rows = [{"text": r["text"], "label": min(60, len(r["text"].split()))} for r in raw]
    spec = JobCreate.model_validate(
        {
            "model": "all-MiniLM-L6-v2",
            "training_file": "sms_length",
            "task": "regression",
            "seed": 0,
            "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
            "training": {"epochs": 2, "batch_size": 32, "learning_rate": 2e-3, "max_seq_length": 96},
            "data": {"validation_split": 0.1, "test_split": 0.1},
        }
    ).resolve()
    result, wall = train_minilm(spec, rows)
    # The baseline sees the same split: make_splits is deterministic for the seed.
    from tuneforge.worker.training.data import make_splits

    splits = make_splits(rows, None, spec)
    mean = sum(r["label"] for r in splits.train) / len(splits.train)
    baseline_mae = sum(abs(r["label"] - mean) for r in splits.test) / len(splits.test)
    test = result.final_metrics["test"]
    ok = test["mae"] < baseline_mae
    record(
        "Quality: SMS length in words, QLoRA regression on all-MiniLM-L6-v2",
        [
            "| metric | model | predict the mean |",
            "|---|---|---|",
            f"| test MAE (words, {len(splits.test)} messages) | {test['mae']:.2f} | {baseline_mae:.2f} |",
            f"| test R² | {test['r2']:.3f} | 0 |",
            "",
            f"{result.steps} steps, {wall:.0f} s. Verdict: MAE {'beats' if ok else 'does NOT beat'} the mean.",
        ],
        args.record,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

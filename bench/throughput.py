"""Training throughput: Tuneforge's default causal-LM recipe against the naive one.

Same model, data, seed, loop and hardware; only the batching differs:

- naive: random batches, each padded to its longest example (what a plain HF + peft loop does);
- default: length-grouped batches (Tuneforge's default, `training.group_by_length=true`);
- packed: `training.packing=true`, examples concatenated into full rows with position ids that
  restart per example (block-diagonal attention, no padding inside a row), with the batch size
  chosen so a step sees about as many tokens as the others.

Data: the SMS texts of ../shared/data/sms_spam.jsonl as causal-LM text, whose lengths vary from a
few tokens to hundreds. Reports effective (non-padding) tokens/s, padding efficiency (real tokens /
padded tokens) and the final held-out loss.

    python -m bench.throughput [--steps 60] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import record, sms_rows
from tuneforge.app.demo.tiny_model import build_tiny_llama
from tuneforge.app.jobs.request import JobCreate
from tuneforge.contract.spec import JobSpec
from tuneforge.worker.training.data import batch_order, encode_causal
from tuneforge.worker.training.model import load_tokenizer
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

BATCH = 16
SEQ = 256


def spec_for(recipe: str, steps: int, batch_size: int) -> JobSpec:
    training: dict[str, Any] = {
        "max_steps": steps,
        "batch_size": batch_size,
        "max_seq_length": SEQ,
        "learning_rate": 2e-3,
        "logging_every": 5,
        "group_by_length": recipe != "naive",
        "packing": recipe == "packed",
    }
    body = {
        "model": "bench",
        "training_file": "sms",
        "seed": 0,
        "training": training,
        "data": {"validation_split": 0.05},
    }
    return JobCreate.model_validate(body).resolve()


def padding_efficiency(examples: Sequence[dict[str, Any]], spec: JobSpec) -> float:
    """Real tokens / tokens in the padded batches, over the batches of the first epoch."""
    lengths = [len(ex["input_ids"]) for ex in examples]
    t = spec.training
    order = batch_order(len(examples), t.batch_size, spec.seed, 0, lengths if t.group_by_length else None)
    real = sum(lengths)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in order)
    return real / padded


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    rows = [{"text": r["text"]} for r in sms_rows()]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_llama(Path(tmp) / "model", " ".join(r["text"] for r in rows), hidden=256, layers=4)
        tok = load_tokenizer(model_dir)
        probe = encode_causal(rows, tok, spec_for("naive", 1, BATCH))
        mean_len = probe.real_tokens / len(probe.examples)
        packed_batch = max(1, round(BATCH * mean_len / SEQ))
        for recipe in ("naive", "default", "packed"):
            spec = spec_for(recipe, args.steps, packed_batch if recipe == "packed" else BATCH)
            encoded = encode_causal(rows, tok, spec)
            reporter = MemoryReporter()
            t0 = time.perf_counter()
            result = run(spec, model_dir, rows, None, Path(tmp) / recipe, reporter)
            wall = time.perf_counter() - t0
            speeds = [pt["tokens_per_second"] for pt in reporter.points if pt.get("tokens_per_second")]
            results[recipe] = {
                "tokens_per_s": statistics.median(speeds[1:] or speeds),
                "padding_eff": padding_efficiency(encoded.examples, spec),
                "eval_loss": result.final_metrics["validation"]["eval_loss"],
                "tokens": result.trained_tokens,
                "wall": wall,
                "batch": spec.training.batch_size,
            }
            print(recipe, results[recipe], flush=True)

    naive = results["naive"]["tokens_per_s"]
    lines = [
        f"tiny Llama (hidden 256, 4 layers) 4-bit NF4 + LoRA r=16, SMS texts as causal LM (mean "
        f"{mean_len:.0f} tokens, max {SEQ}), {args.steps} steps, seed 0.",
        "",
        "| recipe | batch | padding efficiency | effective tokens/s | vs naive | final eval loss | tokens trained |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['batch']} | {r['padding_eff']:.2f} | {r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s'] / naive:.2f}x | {r['eval_loss']:.3f} | {r['tokens']:,} |"
        )
    ratio = results["default"]["tokens_per_s"] / naive
    lines += ["", f"Default recipe vs naive: **{ratio:.2f}x** effective tokens/s (target 1.5x)."]
    record("Throughput: default causal-LM recipe vs the naive one", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Causal-LM QLoRA on a real pretrained model: SmolLM2-135M-Instruct on tiny-shakespeare, held-out
perplexity before -> after.

    python -m bench.quality_smollm2_shakespeare [--steps 40] [--batch 8] [--seq 128] [--record]

The base is 4-bit NF4 (double quant) with LoRA r=16 on all linear layers, through Tuneforge's own
`run()`. The last 10% of the text is held out; both rows and held-out passages are cut longer than
`--seq` tokens, so every row is a full window of Shakespeare (no end-of-text token to predict). The
"before" is the job's own step-0 baseline evaluation (`final_metrics["baseline"]`), on the same
held-out rows as the "after" (`final_metrics["validation"]`).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from bench.common import SHARED_DATA, PrintingReporter, record
from bench.smollm2 import DEFAULT_MODELS, DESCRIPTION, Clock, model_dir


def vocab_size(model: Path) -> int:
    return int(json.loads((model / "config.json").read_text())["vocab_size"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128, help="tokens per row")
    p.add_argument("--held-out", type=int, default=48, help="held-out passages")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    from tuneforge.app.jobs.request import JobCreate
    from tuneforge.worker.training.run import run

    base = model_dir(args.models_dir)
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text()
    split = int(len(text) * 0.9)
    width = args.seq * 6  # about 3.5 characters per token here: every passage is cut to --seq tokens
    train = [{"text": text[i : i + width]} for i in range(0, split - width, width)]
    held_out = [{"text": text[i : i + width]} for i in range(split, len(text) - width, width)][: args.held_out]
    spec = JobCreate.model_validate(
        {
            "model": "smollm2",
            "training_file": "tinyshakespeare",
            "seed": 0,
            "training": {
                "max_steps": args.steps,
                "batch_size": args.batch,
                "learning_rate": args.lr,
                "max_seq_length": args.seq,
            },
            "scheduler": {"name": "cosine", "warmup_ratio": 0.05},
        }
    ).resolve()
    reporter = PrintingReporter()
    with tempfile.TemporaryDirectory() as out, Clock() as clock:
        result = run(spec, base, train, held_out, Path(out), reporter)
    before, after = result.final_metrics["baseline"], result.final_metrics["validation"]
    n_held = next(d for _, m, d in reporter.events if m.startswith("Data ready") and d)["validation_examples"]
    ratio = after["perplexity"] / before["perplexity"]
    ok = ratio < 0.9
    record(
        "Quality: tiny-shakespeare, QLoRA on SmolLM2-135M-Instruct (causal_lm, real pretrained model)",
        [
            f"{DESCRIPTION}, 4-bit NF4 + double quant, LoRA r=16 all-linear, lr {args.lr:g} cosine, "
            f"batch {args.batch} x {args.seq} tokens. Before = the job's step-0 baseline evaluation.",
            "",
            "| metric | before (step 0) | after | ratio |",
            "|---|---|---|---|",
            f"| held-out loss ({n_held} passages x {args.seq} tokens) | {before['eval_loss']:.3f} "
            f"| {after['eval_loss']:.3f} | {after['eval_loss'] - before['eval_loss']:+.3f} |",
            f"| held-out perplexity | {before['perplexity']:.1f} | {after['perplexity']:.1f} | {ratio:.2f}x |",
            f"| next-token accuracy | {before['mean_token_accuracy']:.3f} | {after['mean_token_accuracy']:.3f} | |",
            "",
            f"{result.steps} steps, {result.trained_tokens:,} tokens trained, {clock.line()} "
            "(includes loading, both evaluations and the adapter's publication; "
            f"ln(vocab) = {math.log(vocab_size(base)):.2f}). "
            f"Verdict: perplexity {'fell clearly' if ok else 'did NOT fall clearly'}.",
        ],
        args.record,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

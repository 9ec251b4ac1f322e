"""Causal-LM QLoRA on tiny-shakespeare: held-out perplexity of the base model vs the adapted one.

    python bench/quality_shakespeare.py [--record]

No causal LM ships in a package this environment can install, so the base is a small Llama built
from a config (2 layers, hidden 128, a 512-token BPE trained on the corpus), randomly initialised
and 4-bit NF4 quantized; only the LoRA adapter trains. Rows are 512-character chunks; the last 10%
of the text is held out.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from bench.common import SHARED_DATA, record
from tuneforge.app.demo.tiny_model import build_tiny_llama
from tuneforge.app.jobs.request import JobCreate
from tuneforge.worker.training.configs import pick_device
from tuneforge.worker.training.data import encode_causal
from tuneforge.worker.training.evaluation import evaluate
from tuneforge.worker.training.model import load_model, load_tokenizer
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="store_true")
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()

    text = (SHARED_DATA / "tinyshakespeare.txt").read_text()
    split = int(len(text) * 0.9)
    chunk = 512
    train = [{"text": text[i : i + chunk]} for i in range(0, split - chunk, chunk)]
    held_out = [{"text": text[i : i + chunk]} for i in range(split, len(text) - chunk, chunk)]
    body = {
        "model": "tiny-shakespeare",
        "training_file": "tinyshakespeare",
        "seed": 0,
        "lora": {"r": 64, "alpha": 64, "dropout": 0.0},
        "training": {"max_steps": args.steps, "batch_size": 16, "learning_rate": 5e-3, "max_seq_length": 256},
        "scheduler": {"name": "cosine", "warmup_ratio": 0.03},
        "data": {"validation_split": 0.0},
    }
    spec = JobCreate.model_validate(body).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_llama(Path(tmp) / "model", text[:split], hidden=128, layers=2)
        tok = load_tokenizer(model_dir)
        device = pick_device()
        base, _ = load_model(model_dir, spec, device)
        held = encode_causal(held_out, tok, spec)
        before = evaluate(base, held, spec, tok.pad_token_id, device, None)
        del base
        t0 = time.perf_counter()
        result = run(spec, model_dir, train, held_out, Path(tmp) / "out", MemoryReporter())
        wall = time.perf_counter() - t0
    after = result.final_metrics["validation"]
    ok = after["perplexity"] < 0.8 * before["perplexity"]
    record(
        "Quality: tiny-shakespeare, QLoRA on a 4-bit tiny Llama (causal_lm)",
        [
            "| metric | base | adapted |",
            "|---|---|---|",
            f"| held-out loss ({len(held.examples)} chunks) | {before['eval_loss']:.3f} | {after['eval_loss']:.3f} |",
            f"| held-out perplexity | {before['perplexity']:.1f} | {after['perplexity']:.1f} |",
            "",
            f"{result.steps} steps, {result.trained_tokens:,} tokens, {wall:.0f} s. "
            f"Verdict: perplexity {'fell clearly' if ok else 'did NOT fall clearly'} "
            f"({after['perplexity'] / before['perplexity']:.2f}x the base; ln(vocab) = {math.log(len(tok)):.2f}).",
        ],
        args.record,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

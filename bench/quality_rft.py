"""Reinforcement fine-tuning on a real model, through the real service: held-out reward before -> after.

    python -m bench.quality_rft [--train 64] [--test 60] [--steps 12] [--record] [--warm-start]

Task (made here, checkable): "What is A + B?" for single-digit A and B, asked as a chat with the system
prompt "Answer with the number only." The reward is 1 when the first integer of the reply is A + B. The
rows are generated from a seeded RNG: train and held-out pairs (A, B) do not overlap. The grader is
OpenAI's `string_check` (`ilike`, reference `{{item.answer}}`) in the job; the benchmark scores the
held-out replies itself, through `POST /v1/chat/completions` at temperature 0 (first integer == answer),
before with the base `smollm2` and after with the job's `fine_tuned_model`, never from the job's numbers.

Sizing for the shared 2-core machine (generation of the groups is the dominant cost: ~0.13 s of CPU per
token for SmolLM2 4-bit): batch 4 prompts x 4 completions of at most 8 tokens, 12 steps; target
+0.2 absolute held-out reward. `--warm-start` adds a second run: a short supervised SMS job (the demo's
task), then a reinforcement job from its adapter (`from_checkpoint`) with a `string_check` grader on the
label, held-out SMS accuracy before -> after.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.common import record
from bench.quality_smollm2_instruct import free_port, start_service, upload, wait_job
from bench.smollm2 import DEFAULT_MODELS, DESCRIPTION, MODEL, model_dir
from tuneforge.app.demo.sms_task import balanced_split, chat_row, load_rows, parse_answer, prompt_messages

SYSTEM = "Answer with the number only."


def sum_rows(pairs: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What is {a} + {b}?"}],
            "answer": str(a + b),
        }
        for a, b in pairs
    ]


def split_pairs(n_train: int, n_test: int, seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    pairs = [(a, b) for a in range(10) for b in range(10)]
    random.Random(seed).shuffle(pairs)
    return pairs[n_test : n_test + n_train], pairs[:n_test]


def first_int(reply: str) -> str | None:
    m = re.search(r"-?\d+", reply)
    return m.group(0) if m else None


def held_out_reward(c: httpx.Client, model: str, rows: list[dict[str, Any]], max_tokens: int) -> float:
    right = 0
    for row in rows:
        body = {"model": model, "messages": row["messages"], "temperature": 0, "max_tokens": max_tokens}
        r = c.post("/chat/completions", json=body)
        r.raise_for_status()
        right += first_int(r.json()["choices"][0]["message"]["content"] or "") == row["answer"]
    return right / len(rows)


def sms_accuracy(c: httpx.Client, model: str, rows: list[dict[str, str]]) -> float:
    right = 0
    for row in rows:
        body = {"model": model, "messages": prompt_messages(row["text"]), "temperature": 0, "max_tokens": 4}
        r = c.post("/chat/completions", json=body)
        r.raise_for_status()
        right += parse_answer(r.json()["choices"][0]["message"]["content"] or "") == row["label"]
    return right / len(rows)


def rft_body(train: str, validation: str, args: argparse.Namespace, grader: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": MODEL,
        "training_file": train,
        "validation_file": validation,
        "seed": args.seed,
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": grader,
                "hyperparameters": {"batch_size": 4, "eval_interval": args.steps, "eval_samples": 8},
            },
        },
        "training": {"max_steps": args.steps, "learning_rate": args.lr},
        "reinforcement": {"generations_per_prompt": 4, "max_new_tokens": 8, "temperature": 1.0},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=64)
    p.add_argument("--test", type=int, default=30)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--warm-start", action="store_true")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--threads", type=int)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    train_pairs, test_pairs = split_pairs(args.train, args.test, args.seed)
    train, test = sum_rows(train_pairs), sum_rows(test_pairs)
    grader = {"type": "string_check", "name": "sum", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "operation": "ilike"}  # fmt: skip
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(model_dir(args.models_dir), data_dir / "models" / MODEL)
        proc, c, _ = start_service(data_dir, free_port(), Path(tmp) / "up.log", args.threads)
        try:
            before = held_out_reward(c, MODEL, test, 8)
            body = rft_body(upload(c, "sums.jsonl", train), upload(c, "sums_val.jsonl", test[:8]), args, grader)
            r = c.post("/fine_tuning/jobs", json=body)
            r.raise_for_status()
            job = wait_job(c, r.json()["id"], timeout=3 * 3600)
            if job["status"] != "succeeded":
                raise SystemExit(f"job {job['status']}: {job.get('error')}")
            after = held_out_reward(c, job["fine_tuned_model"], test, 8)
            lines += [
                f"{DESCRIPTION}; `tuneforge up`. Sums of two digits ({len(train)} train, {len(test)} held-out pairs, "
                f"disjoint), string_check grader; GRPO batch 4 x 4 completions of <= 8 tokens, {args.steps} steps, "
                f"lr {args.lr:g}. Held-out reward (first integer == sum, temperature 0, /v1/chat/completions): "
                f"**{before:.2f} -> {after:.2f}** ({after - before:+.2f}; target +0.20).",
            ]
            if args.warm_start:
                sms_train, sms_test = balanced_split(load_rows(), 160, 60, seed=args.seed)
                sft = {"model": MODEL, "training_file": upload(c, "sms.jsonl", [chat_row(x) for x in sms_train]),
                       "training": {"max_steps": 20, "batch_size": 8, "learning_rate": 2e-3},
                       "data": {"validation_split": 0.0}}  # fmt: skip
                r = c.post("/fine_tuning/jobs", json=sft)
                r.raise_for_status()
                sft_job = wait_job(c, r.json()["id"], timeout=3 * 3600)
                warm_before = sms_accuracy(c, sft_job["fine_tuned_model"], sms_test)
                rows = [{"messages": prompt_messages(x["text"]), "label": x["label"]} for x in sms_train]
                label = {**grader, "name": "label", "reference": "{{item.label}}"}
                body = rft_body(upload(c, "sms_prompts.jsonl", rows), upload(c, "sms_val.jsonl", rows[:8]), args, label)
                body["from_checkpoint"] = sft_job["fine_tuned_model"]
                r = c.post("/fine_tuning/jobs", json=body)
                r.raise_for_status()
                warm = wait_job(c, r.json()["id"], timeout=3 * 3600)
                warm_after = sms_accuracy(c, warm["fine_tuned_model"], sms_test)
                lines.append(
                    f"Warm start from the supervised SMS adapter (20 steps), string_check on the label: held-out "
                    f"accuracy **{warm_before:.1%} -> {warm_after:.1%}**."
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    record("Quality: reinforcement fine-tuning (GRPO) on SmolLM2-135M-Instruct through the service", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

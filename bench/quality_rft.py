"""Reinforcement fine-tuning on a real model, through the real service: held-out reward before -> after.

    python -m bench.quality_rft [--task sentiment|sums] [--part main|warm|both] [--steps 30] [--lr 1e-3]
        [--batch 4] [--gens 8] [--bits none|4|8] [--save-every N --deadline MIN] [--record]

Main task (`sentiment`, made here, checkable): one-sentence reviews built from templates ("The coffee
was dreadful."), asked "Is this review positive or negative?" with the system prompt "Answer with one
word: positive or negative." Train and held-out reviews use disjoint adjectives (the model must use
what it knows about words, not memorise them); the held-out set is half positive, half negative, so
answering one label always scores 0.5. The reward is 1 when the reply contains the right label and not
the other one (case-insensitive): in the job, a `multi` grader of two `string_check` (`ilike`) graders,
`right * (1 - wrong)`, so that naming both labels earns nothing. The benchmark scores the held-out
replies itself with the same rule, through `POST /v1/chat/completions` at temperature 0, before with the
base `smollm2` and after with the job's `fine_tuned_model`, never from the job's numbers.

Why this task: SmolLM2-135M-Instruct's base scored 0.62 on a first screen (transformers, greedy, 8 tokens,
mixed adjectives) and 0.45 on this held-out set through `/v1/chat/completions`; it mostly answers "The
review is positive, ...", inside the 10-70% band where groups of samples disagree. Sums of two digits
(`--task sums`, the first run) scored 0.07-0.10: most groups all wrong, no signal; parity ("even or odd")
0.42, "is A larger than B" 0.05, "A - B" 0.10, each screened on 40 prompts.

`--part warm` (or `both`): the demo's supervised SMS job (`tuneforge demo`'s plan: 320 balanced rows, lr
2e-3, `--sft-steps` of them, 4-bit QLoRA), then a reinforcement job from its adapter, on the base at `--bits`
(`from_checkpoint`) with a `string_check` grader (`eq` against the label: the reply must be the one word),
held-out accuracy before -> after on the demo's 40 held-out messages, scored as the demo scores them.

Sizing: generation of the groups and three passes over them make a step cost about 3 TFLOP at 4 prompts
x 8 completions, so on a CPU the base is unquantized by default (`--bits none`): bitsandbytes' 4-bit CPU
path was much slower here (its first step took over 10 minutes under load; unquantized steps of half the
completions took 1-2 minutes under similar load; not a controlled comparison). `--deadline` cancels a
job still running after that many minutes and scores its latest checkpoint (`--save-every`) instead;
`--base-reward` reuses the base's number from an earlier run of the same command (the base's replies are
greedy, so it does not change).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import record
from bench.quality_smollm2_instruct import free_port, start_service, upload, wait_job
from bench.smollm2 import DEFAULT_MODELS, DESCRIPTION, MODEL, load_average, model_dir
from tuneforge.app.demo.plan import REAL
from tuneforge.app.demo.sms_task import balanced_split, chat_row, load_rows, parse_answer, prompt_messages

SUMS_SYSTEM = "Answer with the number only."
SENTIMENT_SYSTEM = "Answer with one word: positive or negative."
SUBJECTS = ["The food", "The service", "The room", "The staff", "The movie", "The book", "The coffee",
            "The hotel", "The concert", "The flight", "The pizza", "The show", "The game", "The car"]  # fmt: skip
TEMPLATES = ["{s} was {a}.", "{s} was really {a}.", "Honestly, {s_low} was {a}.", "I thought {s_low} was {a}."]
# Train and held-out adjectives do not overlap.
POSITIVE = (["wonderful", "delicious", "friendly", "excellent", "lovely", "fantastic", "superb", "pleasant"],
            ["amazing", "great", "delightful", "brilliant"])  # fmt: skip
NEGATIVE = (["terrible", "awful", "rude", "disgusting", "horrible", "bland", "nasty", "boring"],
            ["dreadful", "poor", "miserable", "unpleasant"])  # fmt: skip
LABELS = ("positive", "negative")


def sentiment_rows(n: int, held_out: bool, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed * 2 + held_out)
    rows = []
    for i in range(n):
        label = LABELS[i % 2]  # balanced
        adjective = rng.choice((POSITIVE if label == "positive" else NEGATIVE)[held_out])
        s = rng.choice(SUBJECTS)
        review = rng.choice(TEMPLATES).format(s=s, s_low=s[0].lower() + s[1:], a=adjective)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SENTIMENT_SYSTEM},
                    {"role": "user", "content": f"Review: {review}\nIs this review positive or negative?"},
                ],
                "answer": label,
                "other": LABELS[1 - LABELS.index(label)],
            }
        )
    rng.shuffle(rows)
    return rows


def sentiment_reward(reply: str, row: dict[str, Any]) -> float:
    """The job's grader, computed here: the right label named, the other not (case-insensitive)."""
    text = reply.lower()
    return float(row["answer"] in text and row["other"] not in text)


def _contains(name: str, field: str) -> dict[str, Any]:
    return {"type": "string_check", "name": name, "input": "{{sample.output_text}}",
            "reference": "{{item." + field + "}}", "operation": "ilike"}  # fmt: skip


SENTIMENT_GRADER: dict[str, Any] = {
    "type": "multi",
    "name": "sentiment",
    "graders": {"right": _contains("right", "answer"), "wrong": _contains("wrong", "other")},
    "calculate_output": "right * (1 - wrong)",
}


def sum_rows(pairs: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": SUMS_SYSTEM},
                {"role": "user", "content": f"What is {a} + {b}?"},
            ],
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


def sums_reward(reply: str, row: dict[str, Any]) -> float:
    return float(first_int(reply) == row["answer"])


SUMS_GRADER: dict[str, Any] = {"type": "string_check", "name": "sum", "input": "{{sample.output_text}}",
                               "reference": "{{item.answer}}", "operation": "ilike"}  # fmt: skip


def chat(c: httpx.Client, body: dict[str, Any]) -> str:
    """One reply; a 504 (the inference worker still loading the model on a loaded machine) or a 429 is
    asked again, for up to 20 minutes."""
    deadline = time.monotonic() + 1200
    while True:
        r = c.post("/chat/completions", json=body)
        if r.status_code in (429, 503, 504) and time.monotonic() < deadline:
            time.sleep(5)
            continue
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"] or "")


def held_out_reward(c: httpx.Client, model: str, rows: list[dict[str, Any]], max_tokens: int, task: str) -> float:
    reward = sentiment_reward if task == "sentiment" else sums_reward
    total = 0.0
    for row in rows:
        body = {"model": model, "messages": row["messages"], "temperature": 0, "max_tokens": max_tokens}
        total += reward(chat(c, body), row)
    return total / len(rows)


def sms_accuracy(c: httpx.Client, model: str, rows: list[dict[str, str]]) -> float:
    right = 0
    for row in rows:
        body = {
            "model": model,
            "messages": prompt_messages(row["text"]),
            "temperature": 0,
            "max_tokens": REAL.max_tokens,
        }
        right += parse_answer(chat(c, body)) == row["label"]
    return right / len(rows)


def rft_body(
    train: str, validation: str, args: argparse.Namespace, grader: dict[str, Any], max_new_tokens: int
) -> dict[str, Any]:
    return {
        "model": MODEL,
        "training_file": train,
        "validation_file": validation,
        "seed": args.seed,
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": grader,
                "hyperparameters": {"batch_size": args.batch, "eval_interval": args.steps, "eval_samples": 8},
            },
        },
        "training": {"max_steps": args.steps, "learning_rate": args.lr},
        "reinforcement": {"generations_per_prompt": args.gens, "max_new_tokens": max_new_tokens},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "quantization": {"bits": None if args.bits == "none" else int(args.bits)},
    }


def run_main(c: httpx.Client, args: argparse.Namespace) -> list[str]:
    if args.task == "sentiment":
        train, test = sentiment_rows(args.train, False, args.seed), sentiment_rows(args.test, True, args.seed)
        grader, task_line = SENTIMENT_GRADER, "Sentiment of one-sentence reviews (disjoint adjectives)"
    else:
        train_pairs, test_pairs = split_pairs(args.train, args.test, args.seed)
        train, test = sum_rows(train_pairs), sum_rows(test_pairs)
        grader, task_line = SUMS_GRADER, "Sums of two digits (disjoint pairs)"
    started = time.monotonic()
    if args.base_reward is None:
        before = held_out_reward(c, MODEL, test, 8, args.task)
        base_note = ""
    else:  # measured by an earlier run of this command (same data, greedy, same inference path)
        before, base_note = args.base_reward, " (base measured by an earlier run of the same command)"
    print(f"base held-out reward {before:.3f}", flush=True)
    body = rft_body(upload(c, "rft.jsonl", train), upload(c, "rft_val.jsonl", test[:8]), args, grader, 8)
    if args.save_every:
        body["training"]["save_every"] = args.save_every
    r = c.post("/fine_tuning/jobs", json=body)
    r.raise_for_status()
    job_id = r.json()["id"]
    if args.deadline is None:
        job = wait_job(c, job_id, timeout=4 * 3600)
    else:
        left = max(60.0, args.deadline * 60 - (time.monotonic() - started))
        job = wait_job(c, job_id, timeout=left, or_give_up=False)  # still running: scored from a checkpoint
    if job["status"] == "succeeded":
        scored, steps_done = job["fine_tuned_model"], args.steps
    else:  # out of time: cancel, and score the latest checkpoint through chat as it is
        c.post(f"/fine_tuning/jobs/{job_id}/cancel")
        job = wait_job(c, job_id, timeout=1800)
        ckpts = c.get(f"/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 100}).json()["data"]
        if not ckpts:
            raise SystemExit(f"job {job['status']} with no checkpoint: {job.get('error')}")
        latest = max(ckpts, key=lambda x: x["step_number"])
        scored, steps_done = latest["fine_tuned_model_checkpoint"], latest["step_number"]
    after = held_out_reward(c, scored, test, 8, args.task)
    minutes = (time.monotonic() - started) / 60
    base = "unquantized base" if args.bits == "none" else f"{args.bits}-bit base"
    return [
        f"{DESCRIPTION}; `tuneforge up`. {task_line}: {len(train)} train, {len(test)} held-out rows; "
        f"grader `{grader['type']}`; GRPO {args.batch} prompts x {args.gens} completions of <= 8 tokens, "
        f"{steps_done} of {args.steps} steps, lr {args.lr:g}, LoRA r16 ({base}). Held-out reward (the grader's rule, "
        f"temperature 0, /v1/chat/completions, scored by the benchmark): **{before:.2f} -> {after:.2f}** "
        f"({after - before:+.2f}; target +0.20){base_note}; scored: `{scored.split(':')[-1]}`. {minutes:.0f} minutes "
        f"in all; load average {load_average()}.",
    ]


def trained(c: httpx.Client, body: dict[str, Any], what: str) -> dict[str, Any]:
    """POST the job and wait for it; anything but `succeeded` ends the benchmark, saying why."""
    r = c.post("/fine_tuning/jobs", json=body)
    r.raise_for_status()
    job = wait_job(c, r.json()["id"], timeout=4 * 3600)
    if job["status"] != "succeeded":
        raise SystemExit(f"{what} job {job['status']}: {job.get('error')}")
    return job


def run_warm(c: httpx.Client, args: argparse.Namespace) -> list[str]:
    sms_train, sms_test = balanced_split(load_rows(), REAL.n_train, REAL.n_test, seed=REAL.seed)
    train_id = upload(c, "sms.jsonl", [chat_row(x) for x in sms_train])
    val_id = upload(c, "sms_val.jsonl", [chat_row(x) for x in sms_test])
    # The demo's own job (4-bit QLoRA), at --sft-steps. The reinforcement job below loads its adapter onto
    # the base at --bits: an adapter trained on the NF4 base applies to the bf16 one (as merging a QLoRA
    # adapter into the 16-bit base does). Trained unquantized at the demo's lr 2e-3, the supervised job
    # scored 50.0% on the balanced held-out set (one run), what one label for every message scores.
    sft_body = REAL.job_body(train_id, val_id)
    sft_body["training"] |= {"max_steps": args.sft_steps, "eval_every": args.sft_steps}
    sft_job = trained(c, sft_body, "supervised")
    warm_before = sms_accuracy(c, sft_job["fine_tuned_model"], sms_test)
    print(f"SMS supervised {warm_before:.3f}", flush=True)
    rows = [{"messages": prompt_messages(x["text"]), "label": x["label"]} for x in sms_train]
    label = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
             "reference": "{{item.label}}", "operation": "eq"}  # fmt: skip
    val = [{"messages": prompt_messages(x["text"]), "label": x["label"]} for x in sms_test]
    body = rft_body(upload(c, "sms_prompts.jsonl", rows), upload(c, "sms_prompts_val.jsonl", val[:8]), args, label, 4)
    body["from_checkpoint"] = sft_job["fine_tuned_model"]
    body["training"]["max_steps"] = args.warm_steps
    body["method"]["reinforcement"]["hyperparameters"]["eval_interval"] = args.warm_steps
    warm = trained(c, body, "reinforcement")
    warm_after = sms_accuracy(c, warm["fine_tuned_model"], sms_test)
    return [
        f"Warm start: the demo's supervised SMS job ({REAL.n_train} balanced rows, {args.sft_steps} steps, lr "
        f"{REAL.learning_rate:g}, 4-bit QLoRA), then a reinforcement job from its adapter (`from_checkpoint`, "
        f"{'unquantized base' if args.bits == 'none' else args.bits + '-bit base'}), `string_check` "
        f"`eq` on the label, {args.batch} prompts x {args.gens} completions of <= 4 tokens, {args.warm_steps} "
        f"steps, lr {args.lr:g}. Held-out accuracy on the demo's {len(sms_test)} messages (first word, "
        f"temperature 0): supervised **{warm_before:.1%} -> {warm_after:.1%}** after "
        f"reinforcement; load average {load_average()}.",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("sentiment", "sums"), default="sentiment")
    p.add_argument("--part", choices=("main", "warm", "both"), default="main")
    p.add_argument("--train", type=int, default=96)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warm-steps", type=int, default=16)
    p.add_argument("--save-every", type=int, help="checkpoint every N steps (what --deadline scores)")
    p.add_argument("--deadline", type=float, help="minutes: then cancel the job and score its latest checkpoint")
    p.add_argument("--base-reward", type=float, help="the base's held-out reward from an earlier run (skips it)")
    p.add_argument("--sft-steps", type=int, default=REAL.steps, help="the demo's supervised job's steps")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--gens", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--bits",
        choices=("none", "4", "8"),
        default="none",
        help="base weights: none (unquantized, plain LoRA: much faster on a CPU, where bitsandbytes' 4-bit "
        "kernels fall back to a slow path) or 4/8-bit",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--threads", type=int)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(model_dir(args.models_dir), data_dir / "models" / MODEL)
        proc, c, _ = start_service(data_dir, free_port(), Path(tmp) / "up.log", args.threads)
        try:
            if args.part in ("main", "both"):
                lines += run_main(c, args)
            if args.part in ("warm", "both"):
                lines += run_warm(c, args)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    record("Quality: reinforcement fine-tuning (GRPO) on SmolLM2-135M-Instruct through the service", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""An instruction task on a real model, through the real service: the demo's SMS spam task
(tuneforge/app/demo/sms_task.py) at a larger size, held-out accuracy before -> after.

    python -m bench.quality_smollm2_instruct [--train 480] [--test 200] [--steps 60] [--record]

`tuneforge up` runs on a temporary data dir (SQLite, the server-less broker, a training worker and an
inference worker), with SmolLM2-135M-Instruct copied under its models root. The benchmark uploads the
chat rows, creates the job over HTTP (4-bit NF4 QLoRA, LoRA r=16 all-linear), waits for it, and asks
`POST /v1/chat/completions` (temperature 0) every held-out message twice: BEFORE with the base
`smollm2`, AFTER with the job's `fine_tuned_model`. Train and test share no text and are half spam,
half ham, so guessing scores 50%.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, record
from bench.smollm2 import DEFAULT_MODELS, DESCRIPTION, MODEL, Clock, model_dir
from tuneforge.app.demo.plan import REAL, DemoPlan
from tuneforge.app.demo.sms_task import Score, balanced_split, chat_row, load_rows, parse_answer, prompt_messages, score

TERMINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(
    data_dir: Path, port: int, log: Path, threads: int | None
) -> tuple[subprocess.Popen[bytes], httpx.Client, list[int]]:
    """`tuneforge up` on `data_dir`; returns the process, a client with the local key, and the pids of
    its training and inference workers (their CPU time is read from /proc)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env["TUNEFORGE_DATA_DIR"] = str(data_dir)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in every process of the service
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "tuneforge.app.cli", "up", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=fh,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tuneforge up exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        text = log.read_text()
        pids = [int(m) for m in re.findall(r"(?:worker|inference): +pid (\d+)", text)]
        if len(pids) == 2 and (data_dir / "api_key").is_file():
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    key = (data_dir / "api_key").read_text().strip()
                    client = httpx.Client(
                        base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=600
                    )
                    return proc, client, pids
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"tuneforge up did not become ready:\n{log.read_text()[-3000:]}")


def upload(c: httpx.Client, name: str, rows: list[dict[str, Any]]) -> str:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    r = c.post("/files", files={"file": (name, body)}, data={"purpose": "fine-tune"})
    r.raise_for_status()
    return str(r.json()["id"])


def ask_all(c: httpx.Client, model: str, rows: list[dict[str, str]], max_tokens: int) -> tuple[list[str], list[float]]:
    """Every held-out message through POST /chat/completions, one at a time (the inference worker
    answers one request at a time); returns the replies and each request's latency in seconds."""
    replies, latencies = [], []
    for i, row in enumerate(rows):
        body = {"model": model, "messages": prompt_messages(row["text"]), "temperature": 0, "max_tokens": max_tokens}
        t0 = time.perf_counter()
        r = c.post("/chat/completions", json=body)
        latencies.append(time.perf_counter() - t0)
        r.raise_for_status()
        replies.append(r.json()["choices"][0]["message"]["content"] or "")
        if (i + 1) % 50 == 0:
            print(f"  {model}: {i + 1}/{len(rows)} answered, median {statistics.median(latencies):.2f} s", flush=True)
    return replies, latencies


def wait_job(c: httpx.Client, job_id: str, timeout: float, *, or_give_up: bool = True) -> dict[str, Any]:
    """The job once it is terminal; after `timeout` seconds, exit (`or_give_up`) or return it as it is."""
    deadline = time.monotonic() + timeout
    last = -1
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = c.get(f"/fine_tuning/jobs/{job_id}").json()
        step = (job.get("progress") or {}).get("step") or 0
        if step != last:
            print(f"  job {job['status']}, step {step}/{(job.get('progress') or {}).get('total_steps')}", flush=True)
            last = step
        if job["status"] in TERMINAL:
            return job
        time.sleep(2)
    if not or_give_up and job:
        return job
    raise SystemExit(f"job {job_id} did not finish in {timeout:.0f} s")


def loss_change(c: httpx.Client, job_id: str) -> dict[str, float]:
    events = c.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    for e in events:
        data = e.get("data") or {}
        if "validation_loss_before" in data:
            return {"before": data["validation_loss_before"], "after": data["validation_loss_after"]}
    return {}


def row(name: str, s: Score) -> str:
    return (
        f"| {name} | {s.accuracy:.1%} | {s.spam_f1:.3f} (P {s.spam_precision:.2f}, R {s.spam_recall:.2f}) "
        f"| {s.unparsed} |"
    )


def first_words(replies: list[str]) -> str:
    words = Counter((re.findall(r"[A-Za-z]+", r) or ["(empty)"])[0] for r in replies)
    return ", ".join(f"{w!r} {n}" for w, n in words.most_common(5))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=480, help="training rows (half spam)")
    p.add_argument("--test", type=int, default=200, help="held-out rows scored before and after (half spam)")
    p.add_argument("--validation", type=int, default=48, help="of the held-out rows, the job's validation file")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-tokens", type=int, default=4, help="per answer: one word is asked for")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS for the service (default: torch's). On a shared machine 1 avoids OpenMP threads "
        "spinning while their partner waits for a core (10x the CPU time per request here)",
    )
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    source = model_dir(args.models_dir)
    train, test = balanced_split(load_rows(), args.train, args.test, seed=args.seed)
    labels = [r["label"] for r in test]
    # The demo's job (tuneforge/app/demo/plan.py) at this benchmark's sizes.
    plan = DemoPlan(
        model=MODEL,
        n_train=args.train,
        n_test=args.test,
        steps=args.steps,
        batch_size=args.batch,
        learning_rate=args.lr,
        max_seq_length=REAL.max_seq_length,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(source, data_dir / "models" / MODEL)
        proc, c, pids = start_service(data_dir, free_port(), Path(tmp) / "up.log", args.threads)
        worker_pid, inference_pid = pids
        try:
            body = plan.job_body(
                upload(c, "sms_train.jsonl", [chat_row(r) for r in train]),
                upload(c, "sms_val.jsonl", [chat_row(r) for r in test[: args.validation]]),
            )
            body.update(suffix="sms-bench", metadata={"source": "bench.quality_smollm2_instruct"})
            print(f"BEFORE: {len(test)} held-out messages to {MODEL}", flush=True)
            with Clock([inference_pid]) as ask_before:
                before_replies, before_lat = ask_all(c, MODEL, test, args.max_tokens)
            with Clock([worker_pid]) as training:
                r = c.post("/fine_tuning/jobs", json=body)
                r.raise_for_status()
                job = wait_job(c, r.json()["id"], timeout=6 * 3600)
            if job["status"] != "succeeded":
                raise SystemExit(
                    f"job {job['status']}: {job.get('error')}\n{(data_dir / 'worker.log').read_text()[-3000:]}"
                )
            print(f"AFTER: {len(test)} held-out messages to {job['fine_tuned_model']}", flush=True)
            with Clock([inference_pid]) as ask_after:
                after_replies, after_lat = ask_all(c, job["fine_tuned_model"], test, args.max_tokens)
            change = loss_change(c, job["id"])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)

    before, after = score(before_replies, labels), score(after_replies, labels)
    flipped = sum(
        parse_answer(a) == y != parse_answer(b) for a, b, y in zip(after_replies, before_replies, labels, strict=True)
    )
    steps = job["progress"]["step"]
    ok = after.accuracy >= before.accuracy + 0.10 and after.unparsed <= before.unparsed
    lines = [
        f"{DESCRIPTION}; `tuneforge up` (SQLite, embedded broker, one training and one inference worker). "
        f"{len(train)} training rows, {len(test)} held-out rows (half spam each, no shared text; "
        f"`balanced_split(seed={args.seed})`), asked with `prompt_messages()` and scored by `score()` "
        f"(first word of the reply; anything but spam/ham is wrong). Job: 4-bit NF4 + double quant, LoRA r=16 "
        f"all-linear, batch {args.batch}, lr {args.lr:g} cosine, {steps} steps. Answers: "
        f"`POST /v1/chat/completions`, temperature 0, max_tokens {args.max_tokens}."
        + (f" OMP_NUM_THREADS={args.threads} for the service (a shared machine)." if args.threads else ""),
        "",
        "| model | accuracy | spam F1 | unparsed answers |",
        "|---|---|---|---|",
        row(f"before: `{MODEL}` (base)", before),
        row("after: the job's `fine_tuned_model`", after),
        "",
        f"Accuracy **{before.accuracy:.1%} -> {after.accuracy:.1%}** ({after.accuracy - before.accuracy:+.1%}); "
        f"{flipped} answers turned right. First words before: {first_words(before_replies)}; "
        f"after: {first_words(after_replies)}.",
    ]
    if change:
        lines.append(
            f"The job's own validation loss ({args.validation} of the held-out rows, answer token only): "
            f"{change['before']:.3f} -> {change['after']:.3f}."
        )
    lines += [
        "",
        "| stage | wall | CPU | load average (start -> end) |",
        "|---|---|---|---|",
        f"| training job, POST -> succeeded ({steps} steps, {job.get('trained_tokens') or 0:,} tokens) "
        f"| {training.wall:,.0f} s ({training.wall / max(1, steps):.1f} s/step) "
        f"| {training.cpu:,.0f} s (this process + training worker) | {training.load_start} -> {training.load_end} |",
        f"| {len(test)} answers, base | {ask_before.wall:,.0f} s | {ask_before.cpu:,.0f} s (this process + inference "
        f"worker) | {ask_before.load_start} -> {ask_before.load_end} |",
        f"| {len(test)} answers, fine-tuned | {ask_after.wall:,.0f} s | {ask_after.cpu:,.0f} s | "
        f"{ask_after.load_start} -> {ask_after.load_end} |",
        "",
        f"Inference latency per request (HTTP round trip, max_tokens {args.max_tokens}): base median "
        f"{statistics.median(before_lat):.2f} s (p90 {_p90(before_lat):.2f} s, "
        f"first {before_lat[0]:.1f} s with the load); "
        f"fine-tuned median {statistics.median(after_lat):.2f} s (p90 {_p90(after_lat):.2f} s, first "
        f"{after_lat[0]:.1f} s). Verdict: {'clear gain' if ok else 'NO clear gain'} "
        "(target: +10 points of accuracy, no more unparsed answers).",
    ]
    record("Quality: SMS spam as a chat task, QLoRA on SmolLM2-135M-Instruct through the service", lines, args.record)
    return 0 if ok else 1


def _p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


if __name__ == "__main__":
    raise SystemExit(main())

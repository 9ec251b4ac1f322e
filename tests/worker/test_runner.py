"""The Celery task body, run directly against the real database: claim, train, record."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest
from sqlalchemy import select, update

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Checkpoint, Job, JobMetric
from tuneforge.worker.runner import execute

if TYPE_CHECKING:
    from tuneforge.contract.spec import JobSpec
    from tuneforge.worker.training.reporter import Reporter
    from tuneforge.worker.training.run import RunResult


def create(client: httpx.Client, model: str, **over: object) -> dict[str, Any]:
    file_id = upload_jsonl(client, shakespeare_rows(40))["id"]
    body = {"model": model, "training_file": file_id, "seed": 5, **over}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_execute_trains_and_records_everything(client: httpx.Client, tiny_model: str) -> None:
    job = create(client, tiny_model, training={"max_steps": 6, "batch_size": 8, "save_every": 3, "learning_rate": 1e-2})
    assert execute(job["id"], worker_id="w-test") == "succeeded"

    done = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert done["status"] == "succeeded"
    assert done["fine_tuned_model"] == f"ft:{tiny_model}:{done['organization_id']}::{job['id']}"
    assert done["trained_tokens"] > 0
    assert done["finished_at"] >= done["created_at"]
    assert done["error"] is None
    assert done["progress"] | {"elapsed_s": None} == {
        "step": 6, "total_steps": 6, "epoch": done["progress"]["epoch"], "percentage": 100.0,
        "elapsed_s": None, "remaining_s": None,
    }  # fmt: skip
    assert done["final_metrics"]["validation"]["eval_loss"] > 0

    messages = [
        e["message"]
        for e in client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    ]
    for phase in (
        "started attempt 1",
        "Loading model",
        "Training started",
        "Checkpoint saved at step 3",
        "Evaluation at step",
        "successfully completed",
    ):
        assert any(phase in m for m in messages), (phase, messages)

    series = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()
    # Step 0 is the baseline evaluation before training; steps 1-6 are training steps.
    assert [p["step"] for p in series["data"]] == [0, 1, 2, 3, 4, 5, 6]
    assert series["data"][0]["eval_loss"] is not None and series["data"][0]["loss"] is None
    assert all(p["loss"] is not None and p["learning_rate"] > 0 for p in series["data"][1:])
    assert series["data"][-1]["eval_loss"] is not None
    sampled = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics", params={"max_points": 2, "since_step": 1}).json()
    assert sampled["total_points"] == 5 and [p["step"] for p in sampled["data"]] == [2, 6]

    ckpts = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step_number"] for c in ckpts] == [6, 3]
    assert ckpts[0]["metrics"]["train_loss"] > 0
    assert ckpts[0]["object"] == "fine_tuning.job.checkpoint"

    # A second delivery of the same message finds the job taken and does nothing.
    assert execute(job["id"], worker_id="w-dup") == "skipped"


def test_adapter_archive_holds_a_peft_folder(client: httpx.Client, tiny_model: str, tmp_path: Path) -> None:
    import io
    import tarfile

    job = create(client, tiny_model, training={"max_steps": 4, "batch_size": 8, "save_every": 2})
    assert execute(job["id"], worker_id="w-test") == "succeeded"
    r = client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = tar.getnames()
        for m in tar.getmembers():
            assert not m.name.startswith("/") and ".." not in m.name
        tar.extractall(tmp_path, filter="data")
    prefix = f"{job['id']}-adapter"
    assert {f"{prefix}/adapter_config.json", f"{prefix}/adapter_model.safetensors", f"{prefix}/SHA256SUMS.json"} <= set(
        names
    )

    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(tmp_path / prefix)).r == 16  # type: ignore[attr-defined]  # a LoraConfig
    mid = client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter", params={"checkpoint": 2})
    assert mid.status_code == 200
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter", params={"checkpoint": 3}).status_code == 404


def test_model_level_spec_error_fails_the_job_clearly(client: httpx.Client, tiny_model: str) -> None:
    job = create(client, tiny_model, lora={"target_modules": ["c_attn"]}, training={"max_steps": 2})
    assert execute(job["id"], worker_id="w-test") == "failed"
    failed = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_spec"
    assert failed["error"]["param"] == "lora.target_modules"
    assert "c_attn" in failed["error"]["message"]
    assert failed["finished_at"] is not None


def test_unexpected_crash_is_failed_not_stuck(
    client: httpx.Client, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuneforge.worker.runner as runner

    def boom(*a: object, **k: object) -> NoReturn:
        raise KeyError("/secret/server/path")

    monkeypatch.setattr(runner, "run", boom)
    job = create(client, tiny_model, training={"max_steps": 2})
    assert execute(job["id"], worker_id="w-test") == "failed"
    failed = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert failed["error"]["code"] == "internal"
    assert "/secret" not in failed["error"]["message"]


def test_cancel_while_running(client: httpx.Client, tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat reads `cancel_requested` and the loop stops at the next step."""
    import tuneforge.worker.runner as runner

    job = create(client, tiny_model, training={"max_steps": 500, "batch_size": 2, "save_every": 1})
    real_run = runner.run

    def cancel_after_first_checkpoint(
        spec: JobSpec,
        model_dir: Path,
        rows: list[dict[str, Any]],
        val: list[dict[str, Any]] | None,
        out_dir: Path,
        reporter: Reporter,
        **kw: Any,
    ) -> RunResult:
        # The cancel follows progress, not the clock: it is requested once a checkpoint is recorded,
        # however long loading took on a busy machine.
        record = reporter.checkpoint

        def checkpoint_then_cancel(*args: Any, **kwargs: Any) -> None:
            record(*args, **kwargs)
            reporter.event("test: requesting cancel")
            with session_scope() as s:
                s.execute(update(Job).where(Job.id == job["id"]).values(status="cancel_requested"))

        reporter.checkpoint = checkpoint_then_cancel  # type: ignore[method-assign]  # wraps this one reporter's method
        return real_run(spec, model_dir, rows, val, out_dir, reporter, **kw)

    monkeypatch.setattr(runner, "run", cancel_after_first_checkpoint)
    assert execute(job["id"], worker_id="w-test") == "cancelled"
    done = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert done["status"] == "cancelled"
    assert done["progress"]["step"] < 500
    with session_scope() as s:
        assert s.scalar(select(Job.lease_expires_at).where(Job.id == job["id"])) is None
        points = s.scalars(select(JobMetric.step).where(JobMetric.job_id == job["id"])).all()
        kept = s.scalars(select(Checkpoint.step_number).where(Checkpoint.job_id == job["id"])).all()
    assert points, "metrics logged before the cancel are kept"
    assert kept, "checkpoints saved before the cancel are kept"


def test_out_of_memory_fails_with_an_actionable_message(
    client: httpx.Client, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import tuneforge.worker.runner as runner

    def oom(*a: object, **k: object) -> NoReturn:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(runner, "run", oom)
    job = create(client, tiny_model, training={"max_steps": 2})
    assert execute(job["id"], worker_id="w-test") == "failed"
    failed = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert failed["error"]["code"] == "oom"
    assert "batch_size" in failed["error"]["message"] and "gradient_checkpointing" in failed["error"]["message"]


def test_stream_replays_a_finished_job_and_ends(client: httpx.Client, tiny_model: str) -> None:
    job = create(client, tiny_model, training={"max_steps": 3, "batch_size": 8})
    assert execute(job["id"], worker_id="w-test") == "succeeded"
    with client.stream("GET", f"/v1/fine_tuning/jobs/{job['id']}/stream") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    frames = [f for f in body.split("\n\n") if f.startswith("event: ")]
    kinds = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert kinds[0] == "status" and kinds[-1] == "done"
    assert "event" in kinds and "metrics" in kinds
    import json as _json

    metrics = next(_json.loads(f.split("data: ", 1)[1]) for f in frames if f.startswith("event: metrics"))
    assert [p["step"] for p in metrics["points"]] == [0, 1, 2, 3]  # 0: the baseline evaluation
    done = _json.loads(frames[-1].split("data: ", 1)[1])
    assert done["status"] == "succeeded"


def test_metric_points_of_one_step_merge_across_batches(client: httpx.Client, tiny_model: str) -> None:
    from tuneforge.app.jobs import repository

    job = create(client, tiny_model, training={"max_steps": 2})
    with session_scope() as s:
        repository.upsert_metrics(s, job["id"], [{"step": 1, "loss": 2.5, "learning_rate": 1e-3}])
    with session_scope() as s:  # the eval point of the same step, flushed later
        repository.upsert_metrics(s, job["id"], [{"step": 1, "eval_loss": 2.4, "extra": {"perplexity": 11.0}}])
    with session_scope() as s:  # a resumed attempt logs step 1 again
        repository.upsert_metrics(s, job["id"], [{"step": 1, "loss": 2.6, "learning_rate": 1e-3}])
    point = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
    assert len(point) == 1
    assert (point[0]["loss"], point[0]["eval_loss"]) == (2.6, 2.4)

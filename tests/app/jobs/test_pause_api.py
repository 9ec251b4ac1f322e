"""Pause and resume through the API and the runner (real database, no broker needed for a held job)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Job
from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs.reconciler import reconcile_once

if TYPE_CHECKING:
    from tuneforge.contract.spec import JobSpec
    from tuneforge.worker.training.reporter import Reporter
    from tuneforge.worker.training.run import RunResult


def make_job(client: httpx.Client, model: str, **over: object) -> str:
    file_id = upload_jsonl(client, shakespeare_rows(40))["id"]
    r = client.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id, "seed": 5, **over})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def set_job(job_id: str, **values: object) -> None:
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def messages(client: httpx.Client, job_id: str) -> list[str]:
    return [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100").json()["data"]]


def test_pausing_a_queued_job_holds_it_and_resume_queues_it(
    client: httpx.Client, tiny_model: str, settings: Settings
) -> None:
    job_id = make_job(client, tiny_model)
    r = client.post(f"/v1/fine_tuning/jobs/{job_id}/pause")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paused"
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/pause").json()["status"] == "paused"  # idempotent

    # The reconciler never sends a paused job, however old its message.
    set_job(job_id, enqueued_at=utcnow() - dt.timedelta(hours=1))
    sent: list[str] = []
    with session_scope() as s:
        reconcile_once(s, settings, sent.append)
    assert job_id not in sent
    # A message already in the queue finds it not queued: the worker skips it.
    from tuneforge.worker.runner import execute

    assert execute(job_id, worker_id="w-test") == "skipped"

    r = client.post(f"/v1/fine_tuning/jobs/{job_id}/resume")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempt"]) == ("queued", 1)
    assert messages(client, job_id)[0] == "Job resumed; queued to continue from its last checkpoint"
    # Resuming a job that is not paused changes nothing.
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_pause_or_resume_of_a_finished_job_is_a_final_409(client: httpx.Client, tiny_model: str, status: str) -> None:
    job_id = make_job(client, tiny_model)
    set_job(job_id, status=status)
    for verb in ("pause", "resume"):
        r = client.post(f"/v1/fine_tuning/jobs/{job_id}/{verb}")
        assert r.status_code == 409, r.text
        assert r.headers["x-should-retry"] == "false"
        assert r.json()["error"]["code"] == "job_finished"
        assert status in r.json()["error"]["message"]


def test_pause_of_another_orgs_job_is_404(client: httpx.Client, tiny_model: str, other_key: str) -> None:
    job_id = make_job(client, tiny_model)
    r = client.post(f"/v1/fine_tuning/jobs/{job_id}/pause", headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 404


def test_a_paused_job_can_be_cancelled(client: httpx.Client, tiny_model: str) -> None:
    job_id = make_job(client, tiny_model)
    client.post(f"/v1/fine_tuning/jobs/{job_id}/pause")
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_resume_before_the_worker_stopped_withdraws_the_pause(client: httpx.Client, tiny_model: str) -> None:
    job_id = make_job(client, tiny_model)
    set_job(job_id, status="running", worker_id="w", lease_expires_at=utcnow() + dt.timedelta(minutes=1))
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/pause").json()["detailed_status"] == "pause_requested"
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "running"
    assert messages(client, job_id)[0] == "Pause withdrawn; the job keeps training"


def test_a_worker_lost_while_pausing_leaves_the_job_paused(
    client: httpx.Client, tiny_model: str, settings: Settings
) -> None:
    job_id = make_job(client, tiny_model)
    set_job(job_id, status="pause_requested", worker_id="dead", lease_expires_at=utcnow() - dt.timedelta(minutes=1))
    with session_scope() as s:
        counts = reconcile_once(s, settings, lambda _: None)
    assert counts["paused"] == 1
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert (job["status"], job["attempt"]) == ("paused", 1)


def test_runner_pauses_with_a_checkpoint_then_resumes_exactly(
    client: httpx.Client, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat reads `pause_requested`; the loop checkpoints off schedule and the job is
    `paused` with no worker. Resumed, the next delivery continues from that step."""
    import tuneforge.worker.runner as runner

    training = {"max_steps": 8, "batch_size": 8, "save_every": 100, "learning_rate": 1e-2}
    job_id = make_job(client, tiny_model, training=training)
    real_run = runner.run

    def pause_after_start(
        spec: JobSpec,
        model_dir: Path,
        rows: list[dict[str, Any]],
        val: list[dict[str, Any]] | None,
        out_dir: Path,
        reporter: Reporter,
        **kw: Any,
    ) -> RunResult:
        set_job(job_id, status="pause_requested")
        real_progress = reporter.progress

        def progress(step: int, total_steps: int, epoch: float) -> None:
            # Hold step 2 until the heartbeat has read the request: eight tiny steps can finish
            # between two heartbeats on a fast machine, and then nothing would be paused.
            real_progress(step, total_steps, epoch)
            deadline = time.monotonic() + 60
            while step == 2 and reporter.stop_requested() is None and time.monotonic() < deadline:
                time.sleep(0.05)

        reporter.progress = progress  # type: ignore[method-assign]  # wraps this one reporter's method
        return real_run(spec, model_dir, rows, val, out_dir, reporter, **kw)

    monkeypatch.setattr(runner, "run", pause_after_start)
    assert runner.execute(job_id, worker_id="w-test") == "paused"
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "paused"
    paused_at = job["progress"]["step"]
    assert 0 < paused_at <= 2  # at step 2 at the latest, where the request is held until seen
    with session_scope() as s:
        row = s.scalar(select(Job).where(Job.id == job_id))
        assert row is not None and row.worker_id is None and row.lease_expires_at is None
    ckpts = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["step_number"] for c in ckpts] == [paused_at]

    monkeypatch.setattr(runner, "run", real_run)
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"
    assert runner.execute(job_id, worker_id="w-test2") == "succeeded"
    assert f"Resumed from step {paused_at} (attempt 1)" in messages(client, job_id)
    with session_scope() as s:
        assert s.scalar(select(Job.attempt).where(Job.id == job_id)) == 1

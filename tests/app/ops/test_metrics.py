"""/metrics: the series docs/operations.md lists, read from the database on each scrape, plus the
API's own inference and webhook instruments."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from tests.helpers import make_key, shakespeare_rows, upload_jsonl
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Job
from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs import repository as jobs_repository
from tuneforge.app.ops.instruments import observe_inference, record_webhook_failure, time_inference
from tuneforge.contract.status import TERMINAL, JobStatus


def scrape(client: httpx.Client) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    admin = {"Authorization": f"Bearer {make_key('metrics-ops', admin=True)}"}
    r = client.get("/metrics", headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(r.text)}


def test_metrics_cover_queue_outcomes_throughput_inference_and_webhooks(client: httpx.Client, tiny_model: str) -> None:
    file_id = upload_jsonl(client, shakespeare_rows(5))["id"]
    job_id = client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id}).json()["id"]
    with session_scope() as s:  # as a worker would leave it mid-run
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.RUNNING, worker_id="gpu7@metrics-host", started_at=utcnow())
        )
        jobs_repository.upsert_metrics(
            s, job_id, [{"step": 1, "tokens_per_second": 100.0}, {"step": 2, "tokens_per_second": 250.0}]
        )
    observe_inference(0.3, endpoint="chat_completions", model_kind="base")
    with time_inference(endpoint="completions"):
        pass
    record_webhook_failure("timeout")
    try:
        m = scrape(client)
        by_status = {labels["status"]: v for _, labels, v in m["tuneforge_jobs"]}
        assert set(by_status) == {s.value for s in JobStatus}  # every status, zeros included
        assert by_status["running"] >= 1
        with session_scope() as s:
            counts = jobs_repository.counts_by_status(s)
        assert by_status == {s.value: float(counts.get(s, 0)) for s in JobStatus}

        finished = {labels["outcome"]: v for name, labels, v in m["tuneforge_jobs_finished"] if name.endswith("_total")}
        assert set(finished) == {s.value for s in TERMINAL}
        assert m["tuneforge_jobs_started"][0][2] >= 1
        assert m["tuneforge_queue_oldest_seconds"][0][2] >= 0
        assert "tuneforge_trained_tokens" in m

        tps = {labels["worker"]: v for _, labels, v in m["tuneforge_training_tokens_per_second"]}
        assert tps["gpu7@metrics-host"] == 250.0  # the latest step's, not the first's

        counts_by_endpoint = {
            labels["endpoint"]: v
            for name, labels, v in m["tuneforge_inference_latency_seconds"]
            if name.endswith("_count")
        }
        assert counts_by_endpoint["chat_completions"] >= 1 and counts_by_endpoint["completions"] >= 1
        hooks = {labels["reason"]: v for name, labels, v in m["tuneforge_webhook_failures"] if name.endswith("_total")}
        assert hooks["timeout"] >= 1
        assert "process_resident_memory_bytes" in m
    finally:
        with session_scope() as s:
            s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.CANCELLED, finished_at=utcnow()))
    m = scrape(client)
    assert "gpu7@metrics-host" not in {labels["worker"] for _, labels, _ in m["tuneforge_training_tokens_per_second"]}

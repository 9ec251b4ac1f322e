"""GPU-class routing: the estimator picks the smallest class that fits, the job records it, its
message goes to that class's queue, a real `tuneforge worker --queue <class>` takes it, and a class
no live worker serves gets the job an event that says so."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
import redis

from tests.helpers import REDIS_URL, TMP, shakespeare_rows, spawn, stop, upload_jsonl, wait_http_job
from tuneforge.app.core.config import Settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.types import utcnow
from tuneforge.app.fleet import repository as fleet
from tuneforge.app.fleet.routing import NO_WORKER

CLASSES = {"gpu-t-tiny": 0.5, "gpu-t-24g": 24.0, "gpu-t-80g": 80.0}


@pytest.fixture
def classes(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    monkeypatch.setattr(settings, "gpu_queues", CLASSES)
    return CLASSES


def post_job(client: httpx.Client, model: str, **over: object) -> httpx.Response:
    file_id = upload_jsonl(client, shakespeare_rows(8))["id"]
    return client.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id, **over})


def events(client: httpx.Client, job_id: str) -> list[str]:
    return [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]]


def test_smallest_fitting_class_is_recorded_and_published_to(
    client: httpx.Client, tiny_model: str, classes: dict[str, float]
) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    before = r.llen("gpu-t-24g")
    job = post_job(client, tiny_model).json()
    # The tiny model needs well under a GB, but the CUDA runtime allowance (1 GB) rules out 0.5 GB.
    assert job["gpu_class"] == "gpu-t-24g"
    assert r.llen("gpu-t-24g") == before + 1
    assert any(m.startswith(f"{NO_WORKER} 'gpu-t-24g'") for m in events(client, job["id"]))
    client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")


def test_a_job_no_class_holds_is_refused(
    client: httpx.Client, tiny_model: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "gpu_queues", {"gpu-t-tiny": 0.5})
    r = post_job(client, tiny_model)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "insufficient_gpu_memory" and err["param"] == "training.batch_size"
    assert "gpu-t-tiny (0.5 GB)" in err["message"]


def test_a_live_worker_on_the_class_means_no_warning(
    client: httpx.Client, tiny_model: str, classes: dict[str, float]
) -> None:
    with session_scope() as s:
        fleet.beat(s, "test-worker-80g", ["gpu-t-24g", "gpu-t-80g"])
    try:
        job = post_job(client, tiny_model).json()
        assert job["gpu_class"] == "gpu-t-24g"
        assert not any(m.startswith(NO_WORKER) for m in events(client, job["id"]))
        client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    finally:
        with session_scope() as s:
            fleet.leave(s, "test-worker-80g")


def test_a_real_worker_on_its_class_queue_takes_the_job(
    client: httpx.Client, tiny_model: str, classes: dict[str, float]
) -> None:
    job = post_job(client, tiny_model, training={"max_steps": 2}).json()
    assert job["gpu_class"] == "gpu-t-24g"
    worker = spawn(["worker", "--queue", "gpu-t-24g", "--hostname", "gpu24@%h"], log=TMP / "worker-24g.log")
    try:
        log = (TMP / "worker-24g.log").read_text
        done = wait_http_job(client, job["id"], log=lambda: log()[-3000:])
        assert done["status"] == "succeeded", log()[-3000:]
        with session_scope() as s:
            assert "gpu-t-24g" in fleet.live_queues(s, utcnow() - dt.timedelta(minutes=5))  # its heartbeat
    finally:
        stop(worker, timeout=30)

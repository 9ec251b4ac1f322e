"""Artifacts in an S3-compatible bucket (moto's server, a real subprocess): an API and workers that
share nothing but PostgreSQL, Redis and the bucket, a worker killed mid-upload, and an outage."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.helpers import (
    REDIS_URL,
    S3_BUCKET,
    S3_CREDENTIALS,
    TMP,
    FaultyProxy,
    free_port,
    s3_env,
    shakespeare_rows,
    spawn,
    stop,
    upload_jsonl,
    wait_http,
    wait_http_job,
)

PREFIX = f"it-{uuid.uuid4().hex[:8]}"


def bucket() -> Any:
    return boto3.client("s3", endpoint_url=os.environ["TUNEFORGE_TEST_S3"], **_creds())


def _creds() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def keys(prefix: str) -> list[str]:
    pages = bucket().get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=f"{PREFIX}/{prefix}")
    return [o["Key"].removeprefix(f"{PREFIX}/") for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3_api(moto_s3: str, api_key: str) -> Iterator[tuple[str, FaultyProxy, Path]]:
    """`tuneforge api` on the bucket, through a proxy the outage test can take down."""
    import redis
    from sqlalchemy import update

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Job

    os.environ["TUNEFORGE_TEST_S3"] = moto_s3
    # Earlier modules' queued jobs point at local files; these workers must not spend time on them.
    with session_scope() as s:
        s.execute(update(Job).where(Job.status == "queued").values(status="cancelled"))
    redis.Redis.from_url(REDIS_URL).flushdb()
    proxy = FaultyProxy(int(moto_s3.rsplit(":", 1)[1]))
    data_dir = TMP / "s3-api-data"
    port = free_port()
    env = {**s3_env(proxy.url, PREFIX, data_dir), "TUNEFORGE_RECONCILE_SECONDS": "2"}
    proc = spawn(["api", "--port", str(port)], env=env, log=TMP / "s3-api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}", proxy, data_dir
    finally:
        stop(proc)
        proxy.close()


@pytest.fixture
def http(s3_api: tuple[str, FaultyProxy, Path], api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=s3_api[0], headers={"Authorization": f"Bearer {api_key}"}, timeout=120) as c:
        yield c


def start_worker(endpoint: str, data_dir: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        **s3_env(endpoint, PREFIX, data_dir),
        "TUNEFORGE_LEASE_SECONDS": "10",
        "TUNEFORGE_STORE_RETRY_SECONDS": "120",
    }
    return spawn(["worker", "--hostname", f"{name}-{os.getpid()}@%h"], env=env, log=TMP / f"{name}.log")


def wait_job(http: httpx.Client, job_id: str, log: str) -> dict[str, Any]:
    return dict(wait_http_job(http, job_id, log=lambda: (TMP / log).read_text()[-4000:]))


def create_job(http: httpx.Client, tiny_model: str, steps: int, save_every: int) -> str:
    f = upload_jsonl(http, shakespeare_rows(24))
    body = {
        "model": tiny_model,
        "training_file": f["id"],
        "training": {"max_steps": steps, "save_every": save_every, "batch_size": 2},
    }
    r = http.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def adapter_files(http: httpx.Client, job_id: str, **params: int) -> dict[str, bytes]:
    r = http.get(f"/v1/fine_tuning/jobs/{job_id}/adapter", params=params)
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_api_and_worker_share_only_the_database_the_broker_and_the_bucket(
    http: httpx.Client, s3_api: tuple[str, FaultyProxy, Path], moto_s3: str, tiny_model: str, tmp_path: Path
) -> None:
    _, _, api_dir = s3_api
    rows = shakespeare_rows(24)
    f = upload_jsonl(http, rows)
    assert keys(f"files/{f['id']}") == [f"files/{f['id']}"]
    assert not list(api_dir.rglob(f"{f['id']}*")), "the API keeps no copy of an upload"
    content = http.get(f"/v1/files/{f['id']}/content")
    assert content.status_code == 200 and json.loads(content.text.splitlines()[0]) == rows[0]

    job_id = create_job(http, tiny_model, steps=4, save_every=2)
    shutil.rmtree(api_dir, ignore_errors=True)  # the API's local files are gone before the worker starts
    worker_dir = tmp_path / "worker-data"
    worker = start_worker(moto_s3, worker_dir, "s3-worker-a")
    try:
        done = wait_job(http, job_id, "s3-worker-a.log")
    finally:
        stop(worker, timeout=30)
    assert done["status"] == "succeeded", done
    shutil.rmtree(worker_dir)  # ... and the worker's before the download

    stored = keys(f"artifacts/{job_id}/")
    assert f"artifacts/{job_id}/adapter/MANIFEST.json" in stored
    assert f"artifacts/{job_id}/checkpoints/step-00000002/MANIFEST.json" in stored
    # The prepared data went to the bucket too (prepare.py), for the next worker on the same file.
    prepared = keys("prepared/")
    assert any(k.endswith("/tokens.bin") for k in prepared) and any(k.endswith("/MANIFEST.json") for k in prepared)
    files = adapter_files(http, job_id)
    sums = json.loads(files.pop("SHA256SUMS.json"))["files"]
    assert "adapter_model.safetensors" in files
    assert {k: hashlib.sha256(v).hexdigest() for k, v in files.items()} == sums
    assert "adapter_model.safetensors" in adapter_files(http, job_id, checkpoint=2)


def test_a_worker_killed_mid_upload_resumes_from_the_last_complete_checkpoint(
    http: httpx.Client, moto_s3: str, tiny_model: str, tmp_path: Path
) -> None:
    job_id = create_job(http, tiny_model, steps=6, save_every=2)
    proxy = FaultyProxy(int(moto_s3.rsplit(":", 1)[1]))
    # The step-4 checkpoint's adapter files reach the bucket; its state.pt hangs, and the worker dies.
    proxy.on(f"{job_id}/checkpoints/step-00000004/state.pt".encode(), "frozen")
    first = start_worker(proxy.url, tmp_path / "first", "s3-worker-b")
    try:
        assert proxy.triggered.wait(240), (TMP / "s3-worker-b.log").read_text()[-4000:]
        half = keys(f"artifacts/{job_id}/checkpoints/step-00000004/")
        assert any("/adapter/" in k for k in half) and not any(k.endswith("MANIFEST.json") for k in half)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        stop(first)
        proxy.close()
    second = start_worker(moto_s3, tmp_path / "second", "s3-worker-c")  # a fresh machine
    try:
        done = wait_job(http, job_id, "s3-worker-c.log")
    finally:
        stop(second, timeout=30)
    assert done["status"] == "succeeded", done
    events = [
        e["message"] for e in http.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    ]
    assert any(m.startswith("Resumed from step 2 ") for m in events), events
    # The fresh machine downloaded the prepared data from the bucket instead of tokenizing again.
    assert next(m for m in events if m.startswith("Data ready")).endswith("prepared data reused"), events
    steps = [c["step_number"] for c in http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]]
    assert sorted(steps) == [2, 4, 6]


def test_the_bucket_unreachable_for_a_while_then_back(
    http: httpx.Client, s3_api: tuple[str, FaultyProxy, Path], tiny_model: str, tmp_path: Path
) -> None:
    _, proxy, _ = s3_api
    job_id = create_job(http, tiny_model, steps=4, save_every=2)
    # The first checkpoint upload takes the bucket down for 12 s, for the API too.
    proxy.on(f"{job_id}/checkpoints/step-00000002/".encode(), "down", seconds=12)
    worker = start_worker(proxy.url, tmp_path / "w", "s3-worker-d")
    try:
        assert proxy.triggered.wait(240), (TMP / "s3-worker-d.log").read_text()[-4000:]
        r = http.post("/v1/files", files={"file": ("d.jsonl", b'{"text": "x"}\n')}, data={"purpose": "fine-tune"})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable"
        done = wait_job(http, job_id, "s3-worker-d.log")
    finally:
        stop(worker, timeout=30)
    assert done["status"] == "succeeded", done
    assert "retrying" in (TMP / "s3-worker-d.log").read_text()
    assert "adapter_model.safetensors" in adapter_files(http, job_id)

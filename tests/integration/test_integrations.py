"""Job integrations end to end: a real API and worker, a real MLflow tracking server (`mlflow server` on a sqlite
backend, started here), and W&B's own library writing an offline run. A tiny job with both integrations leaves
its metric series, hyperparameters and final metrics in the offline run's files and on the MLflow server; a job
whose MLflow server is down succeeds all the same, with one event saying why."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    REDIS_URL,
    TMP,
    free_port,
    shakespeare_rows,
    spawn,
    upload_jsonl,
    wait_http,
    wait_http_job,
)

MAX_STEPS = 6
WORKER_LOG = TMP / "integrations-worker.log"


class Services:
    def __init__(self, api: str, mlflow: str, dead: str, wandb_dir: Path) -> None:
        self.api, self.mlflow, self.dead, self.wandb_dir = api, mlflow, dead, wandb_dir


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """The process and what it started (`mlflow server` runs uvicorn and a job runner under it)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _log_tail() -> str:
    return WORKER_LOG.read_text()[-5000:] if WORKER_LOG.exists() else ""


@pytest.fixture(scope="module")
def services(api_key: str, tiny_model: str) -> Iterator[Services]:
    import redis
    from sqlalchemy import update

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Job

    # Earlier modules' queued jobs are not this worker's business.
    with session_scope() as s:
        s.execute(update(Job).where(Job.status == "queued").values(status="cancelled"))
    redis.Redis.from_url(REDIS_URL).flushdb()
    root = TMP / "integrations"
    root.mkdir(exist_ok=True)
    mlflow_port, api_port, dead_port = free_port(), free_port(), free_port()
    mlflow_url, dead_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{dead_port}"
    # The tracking server starts first: it is the slowest (its schema migrations, then uvicorn).
    mlflow = spawn(
        ["server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root",
         str(root / "mlflow-artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
        log=root / "mlflow.log", entry=(str(Path(sys.executable).parent / "mlflow"),),
    )  # fmt: skip
    env = {
        "TUNEFORGE_MLFLOW_TRACKING_URIS": json.dumps([mlflow_url, dead_url]),
        "TUNEFORGE_WANDB_DIR": str(root / "wandb"),
        "TUNEFORGE_TRACKER_CLOSE_SECONDS": "8",
        "TUNEFORGE_TRACKER_RETRY_MAX_SECONDS": "2",
        "WANDB_SILENT": "true",
    }
    api = spawn(["api", "--port", str(api_port)], env=env, log=root / "api.log")
    worker = spawn(["worker", "--hostname", f"integrations-{os.getpid()}@%h"], env=env, log=WORKER_LOG)
    try:
        wait_http(f"http://127.0.0.1:{api_port}/healthz", api)
        # Its start is a one-off cost (about 15 s on a quiet 2-core machine, minutes on a loaded one), not progress.
        wait_http(f"{mlflow_url}/health", mlflow, timeout=600)
        yield Services(f"http://127.0.0.1:{api_port}", mlflow_url, dead_url, root / "wandb")
    finally:
        for proc in (worker, api):
            _stop_group(proc)
        _stop_group(mlflow)


@pytest.fixture(scope="module")
def http(services: Services, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=services.api, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as c:
        yield c


def _job(http: httpx.Client, model: str, integrations: list[dict[str, Any]]) -> dict[str, Any]:
    file_id = upload_jsonl(http, shakespeare_rows(40))["id"]
    body = {
        "model": model,
        "training_file": file_id,
        "training": {"max_steps": MAX_STEPS, "batch_size": 4, "max_seq_length": 64, "learning_rate": 1e-2},
        "samples": {"from_validation": 0},
        "integrations": integrations,
    }
    r = http.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    done = wait_http_job(http, r.json()["id"], log=_log_tail)
    assert done["status"] == "succeeded", (done.get("error"), _log_tail())
    return dict(done)


def _events(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return list(http.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"])


def _until(what: str, cond: Callable[[], Any], timeout: float = 180) -> Any:
    """Poll after the job's end: the trackers send the tail within TUNEFORGE_TRACKER_CLOSE_SECONDS of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f}s\n{_log_tail()}")


def read_wandb_run(path: Path) -> list[tuple[str, Any]]:
    """The records of a W&B run file (`run-<id>.wandb`): W&B's LevelDB-style log (a 7-byte `:W&B` header, then
    32 KiB blocks of records with a 7-byte header each: checksum, length, type full|first|middle|last), each
    record a `wandb_internal.Record` protobuf. This is what `wandb sync` uploads."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, chunks, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        body, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        chunks = body if kind in (1, 2) else chunks + body
        if kind in (1, 4):
            record = pb.Record()  # type: ignore[attr-defined]  # generated protobuf, no stubs
            record.ParseFromString(chunks)
            records.append((record.WhichOneof("record_type"), record))
    return records


def _item_key(item: Any) -> str:
    return str(item.key or "/".join(item.nested_key))


def test_a_job_logs_to_wandb_offline_and_to_a_real_mlflow_server(
    services: Services, http: httpx.Client, tiny_model: str
) -> None:
    from mlflow.tracking import MlflowClient

    wandb = {"type": "wandb", "wandb": {"project": "tuneforge-tests", "tags": ["e2e"]}}
    mlflow = {"type": "mlflow", "mlflow": {"tracking_uri": services.mlflow, "experiment": "it", "run_name": "tiny"}}
    job = _job(http, tiny_model, [wandb, mlflow])
    assert job["integrations"] == [wandb]
    series = http.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
    losses = {p["step"]: p["loss"] for p in series if p.get("loss") is not None}
    assert sorted(losses) == list(range(1, MAX_STEPS + 1))

    # ---- W&B: the offline run folder holds the run, its config, every step's loss and the final metrics
    run_file = _until(
        "the offline W&B run, finished",
        lambda: next(
            (f for f in services.wandb_dir.glob(f"wandb/offline-run-*-{job['id']}/run-{job['id']}.wandb")
             if any(kind == "exit" for kind, _ in read_wandb_run(f))),
            None,
        ),
    )  # fmt: skip
    records = read_wandb_run(run_file)
    run = next(r.run for kind, r in records if kind == "run")
    assert (run.run_id, run.project, run.display_name) == (job["id"], "tuneforge-tests", job["id"])
    assert {"e2e", "tuneforge/finetune", f"tuneforge/{job['id']}"} <= set(run.tags)
    config = {_item_key(i): json.loads(i.value_json) for i in run.config.update}
    assert config["training"]["max_steps"] == MAX_STEPS and config["model"] == tiny_model
    history = [
        {_item_key(i): json.loads(i.value_json) for i in r.history.item} for kind, r in records if kind == "history"
    ]
    wandb_losses = {row["_step"]: row["loss"] for row in history if "loss" in row}
    assert wandb_losses == pytest.approx(losses)
    assert any("eval_loss" in row for row in history)
    final = {
        _item_key(i): json.loads(i.value_json) for kind, r in records if kind == "summary" for i in r.summary.update
    }
    assert final["final/train_loss"] == pytest.approx(job["final_metrics"]["train_loss"])
    assert final["tuneforge/status"] == "succeeded"

    # ---- MLflow: the run, tagged with the job, with the spec as params and the series as metric history
    client = MlflowClient(tracking_uri=services.mlflow)
    experiment = client.get_experiment_by_name("it")
    assert experiment is not None
    found = _until(
        "the MLflow run, finished",
        lambda: [
            r for r in client.search_runs([experiment.experiment_id], f"tags.`tuneforge.job_id` = '{job['id']}'")
            if r.info.status == "FINISHED"
        ],
    )  # fmt: skip
    assert len(found) == 1
    mlrun = found[0]
    assert mlrun.info.run_name == "tiny"
    assert mlrun.data.params["training.max_steps"] == str(MAX_STEPS)
    assert mlrun.data.params["model"] == tiny_model and mlrun.data.params["lora.r"] == str(job["spec"]["lora"]["r"])
    history_ml = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "loss")}
    assert history_ml == pytest.approx(losses)
    assert mlrun.data.metrics["final/train_loss"] == pytest.approx(job["final_metrics"]["train_loss"])
    assert "eval_loss" in mlrun.data.metrics

    events = _events(http, job["id"])
    opened = [e for e in events if (e.get("data") or {}).get("integration") in ("wandb", "mlflow")]
    assert {e["data"]["integration"] for e in opened} == {"wandb", "mlflow"}
    assert all(e["level"] == "info" for e in opened), opened  # no outage


def test_a_dead_mlflow_server_never_fails_the_job_and_is_one_event(
    services: Services, http: httpx.Client, tiny_model: str
) -> None:
    mlflow = {"type": "mlflow", "mlflow": {"tracking_uri": services.dead}}
    job = _job(http, tiny_model, [mlflow])  # succeeds: the tracker's failures stay in its own thread
    assert job["spec"]["integrations"][0]["mlflow"]["tracking_uri"] == services.dead
    # The worker keeps retrying (backoff up to 2 s here) until it gives up TUNEFORGE_TRACKER_CLOSE_SECONDS after
    # the job's end; by then it has failed several times, and the job still has one event about it.
    _until("the worker giving up on the dead server", lambda: f"MLflow at {services.dead}: gave up" in _log_tail())
    about = [e for e in _events(http, job["id"]) if (e.get("data") or {}).get("integration") == "mlflow"]
    assert len(about) == 1, about
    assert about[0]["level"] == "warn"
    assert f"MLflow at {services.dead} is unreachable" in about[0]["message"]
    assert "the job goes on" in about[0]["message"]

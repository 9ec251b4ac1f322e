"""Fault injection with real processes (DESIGN.md §4). Each scenario is bounded in time.

The module runs its own `tuneforge api` against its own Redis server, so that Redis can be
restarted without touching other tests, with a 10 s lease and a 1 s reconciler so that recovery is
quick. Recovery times are printed (run with -s to see them)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.helpers import free_port, shakespeare_rows, spawn, stop, upload_jsonl, wait_http, wait_job

LONG: dict[str, Any] = {"max_steps": 100, "batch_size": 2, "save_every": 10, "learning_rate": 1e-3}


@dataclass
class Cluster:
    url: str
    broker: str
    redis_port: int
    redis_dir: Path
    logs: Path
    client: httpx.Client
    redis: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.redis_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        import redis

        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.redis_port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("redis did not start")

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        proc = spawn(["worker", "--hostname", f"{name}@%h"], env=self.env, log=self.logs / f"{name}.log")
        self.workers.append(proc)
        return proc

    def create(self, model: str, training: dict[str, Any], rows: int = 40) -> dict[str, Any]:
        file_id = upload_jsonl(self.client, shakespeare_rows(rows))["id"]
        r = self.client.post(
            "/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id, "training": training}
        )
        assert r.status_code == 200, r.text
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.get(f"/v1/fine_tuning/jobs/{job_id}").json()

    def events(self, job_id: str) -> list[str]:
        data = self.client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
        return [e["message"] for e in reversed(data)]

    def wait(self, job_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict[str, Any]:
        """Until `pred(job)`, while the job makes progress (`wait_job`). An error envelope (a 503
        while PostgreSQL restarts) or a refused connection means: ask again."""

        def fetch() -> dict[str, Any]:
            job = self.job(job_id)
            job["status"]
            return job

        def logs() -> str:
            return "\n".join(p.read_text()[-2500:] for p in self.logs.glob("*.log"))

        return wait_job(
            fetch, pred, idle=timeout, log=logs, every=0.2, retry_on=(httpx.HTTPError, ValueError, KeyError)
        )


@pytest.fixture(scope="module")
def cluster(tiny_model: str, api_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import redis as redis_lib

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Job

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with session_scope() as s:  # only this module's jobs should reach these workers
        s.execute(update(Job).where(Job.status == "queued").values(status="cancelled"))
    logs = tmp_path_factory.mktemp("fault-logs")
    redis_port = free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    env = {
        "TUNEFORGE_BROKER_URL": broker,
        "TUNEFORGE_LEASE_SECONDS": "10",
        "TUNEFORGE_HEARTBEAT_SECONDS": "1",
        "TUNEFORGE_RECONCILE_SECONDS": "1",
        "TUNEFORGE_QUEUED_RESEND_SECONDS": "3",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    c = Cluster(
        url=url,
        broker=broker,
        redis_port=redis_port,
        redis_dir=tmp_path_factory.mktemp("redis"),
        logs=logs,
        client=httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10),
        env=env,
    )
    c.start_redis()
    api = spawn(["api", "--port", str(port)], env=env, log=logs / "api.log")
    try:
        wait_http(f"{c.url}/healthz", api)
        yield c
    finally:
        for w in c.workers:
            stop(w, timeout=30)
        stop(api)
        redis_lib.Redis(port=redis_port).connection_pool.disconnect()
        c.stop_redis()


def running_past(step: int) -> Callable[[dict[str, Any]], bool]:
    return lambda j: j["status"] == "running" and j["progress"]["step"] >= step


def test_kill_9_mid_training_resumes_from_the_checkpoint(cluster: Cluster, tiny_model: str) -> None:
    job = cluster.create(tiny_model, LONG)
    a = cluster.start_worker("killed")
    cluster.wait(job["id"], running_past(25))
    os.killpg(a.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    cluster.start_worker("rescuer")
    cluster.wait(job["id"], lambda j: j["attempt"] == 2 and j["status"] == "running", timeout=60)
    recovered = time.monotonic() - killed_at
    done = cluster.wait(job["id"], lambda j: j["status"] in ("succeeded", "failed"))
    print(f"\nkill -9: running again as attempt 2 after {recovered:.1f}s (lease 10s)")

    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 2
    events = cluster.events(job["id"])
    assert any(e.startswith("Worker lost; re-queued as attempt 2") for e in events), "\n".join(events)
    resumed = [e for e in events if e.startswith("Resumed from step ")]
    assert len(resumed) == 1 and resumed[0].endswith("(attempt 2)") and int(resumed[0].split()[3]) >= 10
    series = cluster.client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics", params={"max_points": 100000}).json()
    # Step 0 is attempt 1's baseline evaluation; none lost, none doubled.
    assert [p["step"] for p in series["data"]] == list(range(0, LONG["max_steps"] + 1))
    r = cluster.client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter")
    assert r.status_code == 200


def test_duplicate_delivery_trains_once(cluster: Cluster, tiny_model: str) -> None:
    from celery import Celery

    from tuneforge.contract.queue import TRAIN_TASK

    while len([w for w in cluster.workers if w.poll() is None]) < 2:
        cluster.start_worker(f"w{len(cluster.workers)}")
    job = cluster.create(tiny_model, {"max_steps": 60, "batch_size": 2})
    publisher = Celery(broker=cluster.broker)
    publisher.send_task(TRAIN_TASK, args=[job["id"]], queue="gpu")
    cluster.wait(job["id"], running_past(5))
    publisher.send_task(TRAIN_TASK, args=[job["id"]], queue="gpu")  # a re-delivery while it trains
    done = cluster.wait(job["id"], lambda j: j["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    events = cluster.events(job["id"])
    assert sum("started attempt" in e for e in events) == 1
    assert sum(e.startswith("Training started") for e in events) == 1


def test_cancel_queued_and_running_then_the_worker_takes_the_next_job(cluster: Cluster, tiny_model: str) -> None:
    for w in cluster.workers:  # one worker, so the second job waits in the queue
        stop(w, timeout=30)
    cluster.workers.clear()
    running = cluster.create(tiny_model, {**LONG, "max_steps": 5000})
    queued = cluster.create(tiny_model, {"max_steps": 5})
    cluster.start_worker("single")
    cluster.wait(running["id"], running_past(3))
    t0 = time.monotonic()
    assert cluster.client.post(f"/v1/fine_tuning/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
    assert (
        cluster.client.post(f"/v1/fine_tuning/jobs/{running['id']}/cancel").json()["detailed_status"]
        == "cancel_requested"
    )
    cluster.wait(running["id"], lambda j: j["status"] == "cancelled", timeout=10)
    print(f"\ncancel: running job cancelled {time.monotonic() - t0:.1f}s after the request")
    nxt = cluster.create(tiny_model, {"max_steps": 4})
    assert (
        cluster.wait(nxt["id"], lambda j: j["status"] in ("succeeded", "failed"), timeout=60)["status"] == "succeeded"
    )
    assert cluster.job(queued["id"])["status"] == "cancelled"  # never trained after its cancel


def test_sigterm_checkpoints_and_requeues(cluster: Cluster, tiny_model: str) -> None:
    for w in cluster.workers:
        stop(w, timeout=30)
    cluster.workers.clear()
    job = cluster.create(tiny_model, {**LONG, "save_every": 1000, "max_steps": 60})
    a = cluster.start_worker("rolling")
    cluster.wait(job["id"], running_past(15))
    t0 = time.monotonic()
    os.kill(a.pid, signal.SIGTERM)
    a.wait(timeout=30)
    print(f"\nSIGTERM: worker exited {time.monotonic() - t0:.1f}s after the signal")
    handed_back = cluster.job(job["id"])
    assert handed_back["status"] == "queued" and handed_back["attempt"] == 2
    cluster.start_worker("successor")
    done = cluster.wait(job["id"], lambda j: j["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded" and done["attempt"] == 2
    events = cluster.events(job["id"])
    assert "Worker shutting down; checkpoint saved and job re-queued" in events
    resumed = [e for e in events if e.startswith("Resumed from step ")]
    # The checkpoint written at shutdown (save_every is 1000), not step 0.
    assert len(resumed) == 1 and int(resumed[0].split()[3]) >= 15 and resumed[0].endswith("(attempt 2)")


def test_redis_restart_loses_no_queued_job(cluster: Cluster, tiny_model: str) -> None:
    for w in cluster.workers:
        stop(w, timeout=30)
    cluster.workers.clear()
    jobs = [cluster.create(tiny_model, {"max_steps": 3, "batch_size": 4}) for _ in range(3)]
    cluster.stop_redis()  # no persistence: the three messages are gone
    cluster.start_redis()
    t0 = time.monotonic()
    cluster.start_worker("after-redis")
    for j in jobs:
        done = cluster.wait(j["id"], lambda x: x["status"] in ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded"
    print(f"\nredis restart: all 3 queued jobs succeeded {time.monotonic() - t0:.1f}s after the restart")


def _pg_restart_command() -> list[str] | None:
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0 or not Path("/etc/postgresql").is_dir():
        return None
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


# serial: restarting PostgreSQL drops every connection on the machine, so scripts/test.sh runs this
# test alone, after the parallel part of the suite.
@pytest.mark.serial
@pytest.mark.skipif(_pg_restart_command() is None, reason="needs a local pg_ctlcluster cluster and root")
def test_postgres_restart_while_training(cluster: Cluster, tiny_model: str) -> None:
    if not [w for w in cluster.workers if w.poll() is None]:
        cluster.start_worker("pg")
    job = cluster.create(tiny_model, {**LONG, "max_steps": 200})
    cluster.wait(job["id"], running_past(10))
    cmd = _pg_restart_command()
    assert cmd is not None
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    t0 = time.monotonic()
    cluster.wait(job["id"], lambda j: True, timeout=30)  # the API answers again
    print(f"\npostgres restart: API served again {time.monotonic() - t0:.1f}s after the restart returned")
    done = cluster.wait(job["id"], lambda j: j["status"] in ("succeeded", "failed"), timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 1  # a blip, not a lost worker

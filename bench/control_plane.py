"""Control plane, on PostgreSQL + Redis (the deployed setup), each against a bare baseline:

1. POST -> `running` with an idle worker, against a bare Celery round trip on the same broker.
2. Status polling: GET job from 64 concurrent clients, against a bare FastAPI endpoint that returns
   the same row as JSON from the same database (bench/bare_api.py).
3. The metrics series of a job with 100k points, downsampled to 500 for a dashboard.

    python -m bench.control_plane [--seconds 20] [--clients 64] [--record]

Needs PostgreSQL (TUNEFORGE_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres) and
Redis (TUNEFORGE_BENCH_REDIS, default redis://127.0.0.1:6379/12).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.common import ROOT, record

PG = os.environ.get("TUNEFORGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TUNEFORGE_BENCH_REDIS", "redis://127.0.0.1:6379/12")
DB = "tuneforge_bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_http(url: str, headers: dict[str, str] | None = None) -> None:
    for _ in range(300):
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


async def hammer(url: str, headers: dict[str, str], clients: int, seconds: float) -> tuple[float, float, float]:
    """(req/s, p50 ms, p99 ms) of `clients` concurrent loops of GET url."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def loop() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.get(url)
                latencies.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        wall = time.perf_counter() - start
    return len(latencies) / wall, pct(latencies, 0.5), pct(latencies, 0.99)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--launches", type=int, default=15)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    import psycopg
    import redis

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    db_url = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{DB}"
    redis.Redis.from_url(REDIS).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env |= {
        "TUNEFORGE_DATABASE_URL": db_url,
        "TUNEFORGE_BROKER_URL": REDIS,
        "TUNEFORGE_DATA_DIR": str(tmp / "data"),
        "TUNEFORGE_HEARTBEAT_SECONDS": "0.5",
        "BARE_DATABASE_URL": db_url,
        "BARE_BROKER_URL": REDIS,
    }
    os.environ.update(env)  # this process reads the same database

    from sqlalchemy import delete, insert, select

    from tuneforge.app.auth.service import create_key, get_or_create_org
    from tuneforge.app.core.config import get_settings
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.migrate import upgrade
    from tuneforge.app.db.models import Job, JobMetric
    from tuneforge.app.demo.tiny_model import build_tiny_llama

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(db_url)
    assert settings.models_dir is not None
    build_tiny_llama(settings.models_dir / "tiny", "to be or not to be, that is the question " * 200)
    with session_scope() as s:
        _, key = create_key(s, get_or_create_org(s, "bench"), "bench")
    auth = {"Authorization": f"Bearer {key}"}
    py = sys.executable
    bare_worker = [py, "-m", "celery", "-A", "bench.bare_celery", "worker", "-P", "solo", "-Q", "bare"]
    procs = [
        spawn([py, "-P", "-m", "tuneforge.app.cli", "api", "--port", "8811", "--log-level", "WARNING"], env),
        spawn([py, "-m", "uvicorn", "bench.bare_api:app", "--port", "8812", "--log-level", "warning"], env),
        spawn([*bare_worker, "--without-gossip", "--without-mingle", "-l", "WARNING"], env),
        spawn([py, "-P", "-m", "tuneforge.app.cli", "worker", "--log-level", "WARNING"], env),
    ]
    lines: list[str] = []
    try:
        api = "http://127.0.0.1:8811"
        wait_http(f"{api}/healthz")
        wait_http("http://127.0.0.1:8812/docs")
        c = httpx.Client(base_url=f"{api}/v1", headers=auth, timeout=60)
        rows = "\n".join('{"text": "to be or not to be, that is the question"}' for _ in range(64)).encode()
        file_id = c.post("/files", files={"file": ("d.jsonl", rows)}, data={"purpose": "fine-tune"}).json()["id"]
        time.sleep(5)  # workers connected and idle

        # 1. POST -> running, against a bare Celery round trip
        from bench.bare_celery import app as bare_app

        r = redis.Redis.from_url(REDIS)
        bare_ms = []
        for _ in range(args.launches):
            token = uuid.uuid4().hex
            t0 = time.time()
            bare_app.send_task("bare.started", args=[token], queue="bare")
            _, started = r.blpop([f"bare:{token}"], timeout=30)  # type: ignore[misc]
            bare_ms.append((float(started) - t0) * 1000)
        tf_ms = []
        body = {"model": "tiny", "training_file": file_id, "training": {"max_steps": 100000, "batch_size": 2}}
        for _ in range(args.launches):
            t0 = time.time()
            job = c.post("/fine_tuning/jobs", json=body).json()
            while True:
                with session_scope() as s:
                    started_at = s.scalar(select(Job.started_at).where(Job.id == job["id"]))
                if started_at is not None:
                    break
                time.sleep(0.002)
            tf_ms.append((started_at.timestamp() - t0) * 1000)
            c.post(f"/fine_tuning/jobs/{job['id']}/cancel")
            while c.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] != "cancelled":
                time.sleep(0.1)
            time.sleep(0.5)  # the worker acknowledges and is idle again
        d50 = statistics.median(tf_ms) - statistics.median(bare_ms)
        lines += [
            "**POST -> running** (idle worker, tiny model; `running` is the worker's claim, before loading):",
            "",
            "| | p50 ms | p90 ms |",
            "|---|---|---|",
            f"| bare Celery round trip | {statistics.median(bare_ms):.1f} | {pct(bare_ms, 0.9):.1f} |",
            f"| Tuneforge POST -> running | {statistics.median(tf_ms):.1f} | {pct(tf_ms, 0.9):.1f} |",
            "",
            f"Over bare Celery at p50: **{d50:+.1f} ms** (target < 50 ms).",
            "",
        ]
        print("\n".join(lines), flush=True)

        # 2. status polling
        job_id = job["id"]
        tf = asyncio.run(hammer(f"{api}/v1/fine_tuning/jobs/{job_id}", auth, args.clients, args.seconds))
        bare = asyncio.run(hammer(f"http://127.0.0.1:8812/job/{job_id}", {}, args.clients, args.seconds))
        lines += [
            f"**Status polling**: GET job, {args.clients} concurrent clients for {args.seconds:.0f} s each, one "
            "uvicorn process each, load generator on the same machine:",
            "",
            "| | req/s | p50 ms | p99 ms |",
            "|---|---|---|---|",
            f"| bare FastAPI endpoint, same row as JSON | {bare[0]:,.0f} | {bare[1]:.1f} | {bare[2]:.1f} |",
            f"| Tuneforge GET /v1/fine_tuning/jobs/{{id}} | {tf[0]:,.0f} | {tf[1]:.1f} | {tf[2]:.1f} |",
            "",
            f"Ratio **{tf[0] / bare[0]:.2f}** of the bare endpoint's req/s (target 0.5); p99 {tf[2]:.0f} ms "
            "(target < 100 ms).",
            "",
        ]

        # 3. metrics series: 100k points, downsampled to 500
        with session_scope() as s:
            s.execute(delete(JobMetric).where(JobMetric.job_id == job_id))  # a step it trained before cancel
            s.execute(
                insert(JobMetric),
                [{"job_id": job_id, "step": i, "loss": 1.0 / i, "learning_rate": 1e-4} for i in range(1, 100_001)],
            )
        url = f"/fine_tuning/jobs/{job_id}/metrics"
        times, full = [], []
        for _ in range(30):
            t0 = time.perf_counter()
            assert len(c.get(url, params={"max_points": 500}).json()["data"]) == 500
            times.append((time.perf_counter() - t0) * 1000)
        for _ in range(3):
            t0 = time.perf_counter()
            c.get(url, params={"max_points": 100_000})
            full.append((time.perf_counter() - t0) * 1000)
        lines += [
            f"**Metrics series**: 100,000 points downsampled to 500 in SQL: p50 **{statistics.median(times):.1f} ms**, "
            f"p90 {pct(times, 0.9):.1f} ms (target p50 < 100 ms). All 100,000 points: "
            f"{statistics.median(full):.0f} ms.",
        ]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    record("Control plane: API and queue against bare FastAPI and bare Celery", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

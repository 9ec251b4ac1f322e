"""The read path dashboards poll: `GET /v1/fine_tuning/jobs/{id}` on one `tuneforge api` process,
against a bare FastAPI endpoint that reads the same row from the same PostgreSQL with the same
driver (bench/bare_api.py), measured in the same run by `wrk` (a real load generator: the Python
one in bench/control_plane.py saturates first).

    python -m bench.read_path [--seconds 10] [--connections 64] [--rounds 2] [--record]

Needs `wrk` (Debian: apt-get install -y wrk; installed here if missing and we are root) and
PostgreSQL (TUNEFORGE_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres).
Target (issue 15): >= 0.8x bare's req/s, p99 <= 1.25x bare's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ROOT, record

PG = os.environ.get("TUNEFORGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DB = "tuneforge_bench_read"


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
        path = shutil.which("wrk")
    if path is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    return path


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    assert m, value
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def run_wrk(wrk: str, url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses\n{out}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99}


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of each; the best of each is kept")
    p.add_argument("--workers", type=int, default=1, help="`tuneforge api --workers` for an extra run")
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    wrk = ensure_wrk()

    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    base = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{DB}"
    data = Path(tempfile.mkdtemp(prefix="tf-read-bench-"))
    env = {
        **os.environ,
        "TUNEFORGE_DATABASE_URL": url,
        "TUNEFORGE_DATA_DIR": str(data),
        "TUNEFORGE_BROKER_URL": f"sqla+sqlite:///{data / 'broker.db'}",
        "BARE_DATABASE_URL": url,
    }
    os.environ.update(env)
    from tuneforge.app.auth.service import create_key, get_or_create_org
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.migrate import upgrade
    from tuneforge.app.db.models import Job
    from tuneforge.app.jobs.request import JobCreate
    from tuneforge.contract.status import JobStatus

    upgrade(url)
    spec = JobCreate.model_validate({"model": "tiny", "training_file": "file-x"}).resolve()
    with session_scope() as s:
        org = get_or_create_org(s, "bench")
        _, key = create_key(s, org, "bench")
        job = Job(
            id="ftjob-bench",
            organization_id=org.id,
            model="tiny",
            status=JobStatus.RUNNING,
            spec=spec.model_dump(mode="json"),
            training_file="file-x",
            seed=1,
            result_files=[],
            attempt=1,
            step=40,
            total_steps=100,
        )
        s.add(job)
    py = sys.executable

    def spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    api_cmd = [
        py,
        "-P",
        "-m",
        "tuneforge.app.cli",
        "api",
        "--port",
        "8821",
        "--log-level",
        "WARNING",
        "--no-reconciler",
    ]
    bare_cmd = [py, "-m", "uvicorn", "bench.bare_api:app", "--port", "8822", "--log-level", "warning"]
    procs = [spawn(api_cmd), spawn(bare_cmd)]
    if args.workers > 1:
        procs.append(spawn([*api_cmd[:4], "--port", "8823", "--workers", str(args.workers), *api_cmd[6:]]))
    auth = {"Authorization": f"Bearer {key}"}
    results: dict[str, list[dict[str, float]]] = {"tuneforge": [], "bare": [], "healthz": [], "workers": []}
    try:
        wait_http("http://127.0.0.1:8821/healthz")
        wait_http("http://127.0.0.1:8822/docs")
        tf_url = "http://127.0.0.1:8821/v1/fine_tuning/jobs/ftjob-bench"
        assert httpx.get(tf_url, headers=auth).json()["id"] == "ftjob-bench"
        for _ in range(args.rounds):
            results["bare"].append(
                run_wrk(wrk, "http://127.0.0.1:8822/job/ftjob-bench", args.seconds, args.connections, {})
            )
            results["tuneforge"].append(run_wrk(wrk, tf_url, args.seconds, args.connections, auth))
        results["healthz"].append(run_wrk(wrk, "http://127.0.0.1:8821/healthz", args.seconds, args.connections, {}))
        if args.workers > 1:
            wait_http("http://127.0.0.1:8823/healthz")
            w_url = "http://127.0.0.1:8823/v1/fine_tuning/jobs/ftjob-bench"
            results["workers"].append(run_wrk(wrk, w_url, args.seconds, args.connections, auth))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
        shutil.rmtree(data, ignore_errors=True)

    def best(name: str) -> dict[str, float]:
        return max(results[name], key=lambda r: r["rps"])

    tf, bare = best("tuneforge"), best("bare")
    lines = [
        f"`wrk -t1 -c{args.connections} -d{args.seconds}s --latency`, best of {args.rounds} alternating rounds, "
        "one process each, PostgreSQL on the same machine.",
        "",
        "| endpoint | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| bare FastAPI (bench/bare_api.py) | {bare['rps']:.0f} | {bare['p50_ms']:.1f} | {bare['p99_ms']:.1f} |",
        f"| `GET /v1/fine_tuning/jobs/{{id}}` | {tf['rps']:.0f} | {tf['p50_ms']:.1f} | {tf['p99_ms']:.1f} |",
    ]
    h = best("healthz")
    lines.append(f"| `/healthz` | {h['rps']:.0f} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} |")
    if results["workers"]:
        w = best("workers")
        lines.append(
            f"| `GET /v1/fine_tuning/jobs/{{id}}`, `--workers {args.workers}` | {w['rps']:.0f} | "
            f"{w['p50_ms']:.1f} | {w['p99_ms']:.1f} |"
        )
    lines += [
        "",
        f"Tuneforge / bare: **{tf['rps'] / bare['rps']:.2f}x req/s** (target >= 0.8), "
        f"**p99 {tf['p99_ms'] / bare['p99_ms']:.2f}x** (target <= 1.25).",
        f"All rounds: {results}",
    ]
    record("Read path: GET job vs a bare endpoint (wrk)", lines, args.record)


if __name__ == "__main__":
    main()

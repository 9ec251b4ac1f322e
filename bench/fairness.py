"""One tenant's flood against another tenant's reads (OWASP API4): `GET /v1/fine_tuning/jobs/{id}` of a
quiet organization, measured by `wrk`, while the API is quiet and while another organization floods
it as the hostile-tenant probe did: 60 clients each keeping a chat in flight (`max_tokens` 1024,
waiting out each 429's `retry-after-ms` as the openai SDK does) and 50 clients each holding a job stream.

    python -m bench.fairness [--seconds 10] [--connections 8] [--chats 60] [--streams 50] [--uploads 8] [--record]

One `tuneforge api` process and one inference worker (`tuneforge worker --queue`, the tiny Llama, one
compute thread and niced: deployed, it has a GPU machine of its own, here it shares the API's cores)
on PostgreSQL and Redis. Rounds: quiet, flooded, quiet again (the second quiet round shows how much
the machine itself drifted). The flood runs as a process of its own (also used by
tests/app/test_fairness.py), so its client work never shares an interpreter with a measurement:

    python -m bench.fairness flood --base URL --key KEY --model M --job ID --stats FILE [--chats N] [--streams N]
        [--uploads N]

`--uploads N` adds N clients each posting 256 KB files to `/v1/files` back to back (broken on their last
line, so each is spooled and validated whole and then refused, and nothing is stored); docs/security.md
notes what 8 of them cost another tenant.

Needs wrk (Debian: apt-get install -y wrk), PostgreSQL (TUNEFORGE_BENCH_PG, default
postgresql://postgres@127.0.0.1:5432/postgres) and Redis (TUNEFORGE_BENCH_REDIS, default
redis://127.0.0.1:6379/8; its keys are left alone but for this run's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

PG = os.environ.get("TUNEFORGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TUNEFORGE_BENCH_REDIS", "redis://127.0.0.1:6379/8")
DB = "tuneforge_bench_fairness"
INFERENCE_QUEUE = "bench-fair-inference"
TRAINING_QUEUE = "bench-fair-gpu"  # nobody consumes it: the jobs stay queued, their streams open


# ----------------------------------------------------------------------------- the flood


def retry_after(r: httpx.Response) -> float:
    """The wait a 429 asks for, as the openai SDK reads it: `retry-after-ms` first, then `Retry-After`."""
    if "retry-after-ms" in r.headers:
        return float(r.headers["retry-after-ms"]) / 1000
    return float(r.headers.get("retry-after", "1"))


def _error_code(r: httpx.Response) -> str | None:
    try:
        return str(r.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


class Flood:
    """The flooding organization's clients, on one event loop. `stats` counts answers by kind and
    status; `open_streams` is how many streams are open now, `most_open_streams` the most at once."""

    def __init__(
        self, base: str, key: str, model: str, job_id: str, *, chats: int, streams: int, uploads: int = 0
    ) -> None:
        self.base, self.key, self.model, self.job_id = base, key, model, job_id
        self.chats, self.streams, self.uploads = chats, streams, uploads
        self.stats: Counter[str] = Counter()
        self.open_streams = 0
        self.most_open_streams = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "stats": dict(self.stats),
            "open_streams": self.open_streams,
            "most_open_streams": self.most_open_streams,
        }

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(
            max_connections=self.chats + self.streams + self.uploads + 10, max_keepalive_connections=0
        )
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=180, limits=limits) as c:
            tasks = [asyncio.create_task(self._chat(c)) for _ in range(self.chats)]
            tasks += [asyncio.create_task(self._stream(c)) for _ in range(self.streams)]
            tasks += [asyncio.create_task(self._upload(c)) for _ in range(self.uploads)]
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _chat(self, c: httpx.AsyncClient) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "Speak, friend."}], "max_tokens": 1024}
        await self._again_and_again("chat", lambda: c.post("/v1/chat/completions", json=body))

    async def _again_and_again(self, label: str, send: Callable[[], Awaitable[httpx.Response]]) -> None:
        """Send one request after another, counting answers by status (and errors by type), and waiting
        out a 429's Retry-After as a well-behaved client would."""
        while True:
            try:
                r = await send()
            except httpx.HTTPError as exc:
                self.stats[f"{label} {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
                continue
            self.stats[f"{label} {r.status_code}"] += 1
            if r.status_code == 429:
                if _error_code(r) == "rate_limit_exceeded":  # the rate, not the in-flight cap
                    self.stats[f"{label} rate_limited"] += 1
                await asyncio.sleep(retry_after(r))

    async def _upload(self, c: httpx.AsyncClient) -> None:
        """POST /v1/files again and again: 256 KB of chat rows whose last line is broken, so the server
        spools and validates all of it and then answers 400, storing nothing."""
        row = json.dumps({"messages": [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "y"}]})
        data = ((row + "\n") * (256 * 1024 // (len(row) + 1)) + "{broken\n").encode()
        await self._again_and_again(
            "upload", lambda: c.post("/v1/files", files={"file": ("flood.jsonl", data)}, data={"purpose": "fine-tune"})
        )

    async def _stream(self, c: httpx.AsyncClient) -> None:
        while True:
            try:
                async with c.stream("GET", f"/v1/fine_tuning/jobs/{self.job_id}/stream") as r:
                    self.stats[f"stream {r.status_code}"] += 1
                    if r.status_code != 200:
                        await asyncio.sleep(retry_after(r))
                        continue
                    self.open_streams += 1
                    self.most_open_streams = max(self.most_open_streams, self.open_streams)
                    try:
                        async for _ in r.aiter_raw():
                            pass
                    finally:
                        self.open_streams -= 1
            except httpx.HTTPError as exc:
                self.stats[f"stream {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)


def flood_main(argv: list[str]) -> None:
    """Flood until SIGTERM, writing the counters to --stats (atomically) every 0.2 s."""
    p = argparse.ArgumentParser(prog="python -m bench.fairness flood")
    p.add_argument("--base", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--stats", required=True, type=Path)
    p.add_argument("--chats", type=int, default=60)
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--uploads", type=int, default=0)
    args = p.parse_args(argv)
    flood = Flood(
        args.base, args.key, args.model, args.job, chats=args.chats, streams=args.streams, uploads=args.uploads
    )

    def write() -> None:
        tmp = args.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps(flood.snapshot()))
        tmp.replace(args.stats)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        runner = asyncio.create_task(flood.run(stop))
        while not stop.is_set():
            write()
            await asyncio.sleep(0.2)
        await runner
        write()

    asyncio.run(main())


def start_flood(
    base: str, key: str, model: str, job: str, stats: Path, *, chats: int, streams: int, uploads: int = 0
) -> subprocess.Popen[bytes]:
    """The flood as a process of its own; stop it with SIGTERM (its last counters are in `stats`). Niced:
    its clients stand for another tenant's machines, and on a shared box their own CPU must not count
    as the server's slowness."""
    root = Path(__file__).resolve().parents[1]
    cmd = ["nice", "-n", "10", sys.executable, "-m", "bench.fairness", "flood", "--base", base, "--key", key]
    cmd += ["--model", model]
    cmd += ["--job", job, "--stats", str(stats), "--chats", str(chats), "--streams", str(streams)]
    cmd += ["--uploads", str(uploads)]
    return subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def run_wrk(wrk: str, url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    """wrk's req/s, p50 and p99 (ms), and its timed-out requests (a read unanswered for 30 s)."""
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout

    def ms(pattern: str) -> float:
        m = re.search(pattern, out, re.M)
        if m is None:
            return float("nan")
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", m.group(1)).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    done = re.search(r"^\s+(\d+) requests in", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": ms(r"^\s+50%\s+(\S+)"),
        "p99_ms": ms(r"^\s+99%\s+(\S+)"),
        "max_ms": ms(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)"),
        "requests": float(done.group(1)) if done else 0.0,
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "timeouts": float(timeouts.group(1)) if timeouts else 0.0,
    }


def established(
    snapshot: dict[str, Any],
    chats: int,
    streams: int,
    cap: int = 20,
    chat_cap: int = 8,
    uploads: int = 0,
    upload_burst: int = 50,
) -> bool:
    """The flood is at its caps (the defaults): streams open up to the cap, chats turned away beyond
    theirs, and uploads past their burst: turned away for their rate (TUNEFORGE_UPLOAD_REQUESTS_PER_MINUTE_PER_ORG),
    or, on a machine that validates fewer than its 5 a second, over `upload_burst` of them answered."""
    streams_full = snapshot["open_streams"] >= min(streams, cap)
    chats_full = chats <= chat_cap or bool(snapshot["stats"].get("chat 429"))
    answered = snapshot["stats"].get("upload 400", 0) + snapshot["stats"].get("upload 200", 0)
    uploads_full = not uploads or bool(snapshot["stats"].get("upload rate_limited")) or answered > upload_burst
    return streams_full and chats_full and uploads_full


def read_stats(stats: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(stats.read_text()))
    except (OSError, ValueError):
        return {"stats": {}, "open_streams": 0, "most_open_streams": 0}


# ----------------------------------------------------------------------------- the benchmark


def main() -> None:
    if sys.argv[1:2] == ["flood"]:
        flood_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=8, help="wrk's connections for the quiet tenant")
    p.add_argument("--chats", type=int, default=60)
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--uploads", type=int, default=8, help="clients posting 256 KB files back to back (0: none)")
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    from bench.common import record
    from bench.read_path import ensure_wrk, wait_http

    wrk = ensure_wrk()
    import psycopg
    import redis

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    url = f"{PG.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{DB}"
    data = Path(tempfile.mkdtemp(prefix="tf-fair-bench-"))
    env = {
        **os.environ,
        "TUNEFORGE_DATABASE_URL": url,
        "TUNEFORGE_BROKER_URL": REDIS,
        "TUNEFORGE_DATA_DIR": str(data),
        "TUNEFORGE_MODELS_DIR": str(data / "models"),
        "TUNEFORGE_QUEUE": TRAINING_QUEUE,
        "TUNEFORGE_INFERENCE_QUEUE": INFERENCE_QUEUE,
        "TUNEFORGE_MAX_QUEUED_JOBS_PER_ORG": "1000",
    }
    os.environ.update(env)
    from tuneforge.app.auth.service import create_key, get_or_create_org
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.migrate import upgrade
    from tuneforge.app.demo.tiny_model import build_tiny_llama

    upgrade(url)
    build_tiny_llama(data / "models" / "tiny", "to be or not to be, that is the question " * 200)
    keys = {}
    with session_scope() as s:
        for org in ("quiet", "flood"):
            keys[org] = create_key(s, get_or_create_org(s, f"bench-{org}"), "bench")[1]

    py = [sys.executable, "-P", "-m", "tuneforge.app.cli"]
    worker_env = {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    logs = data / "logs"
    logs.mkdir()
    api = subprocess.Popen(
        [*py, "api", "--port", "8831", "--log-level", "WARNING", "--no-reconciler"],
        env=env,
        stdout=(logs / "api.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        ["nice", "-n", "15", *py, "worker", "--queue", INFERENCE_QUEUE, "--hostname", "bench-fair@%h"],
        env=worker_env,
        stdout=(logs / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = "http://127.0.0.1:8831"
    rounds: list[tuple[str, dict[str, float]]] = []
    flood_stats: dict[str, Any] = {}
    try:
        wait_http(f"{base}/healthz")
        jobs = {}
        for org, key in keys.items():
            c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=180)
            rows = "\n".join(json.dumps({"text": "to be or not to be " * 8}) for _ in range(8)).encode()
            file = c.post("/v1/files", files={"file": ("d.jsonl", rows)}, data={"purpose": "fine-tune"}).json()
            jobs[org] = c.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file["id"]}).json()["id"]
            if org == "quiet":  # the worker loads torch and the model before any measurement
                chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
                assert c.post("/v1/chat/completions", json=chat).status_code == 200
        read = f"{base}/v1/fine_tuning/jobs/{jobs['quiet']}"
        auth = {"Authorization": f"Bearer {keys['quiet']}"}
        run_wrk(wrk, read, 2, args.connections, auth)  # warm-up
        rounds.append(("quiet", run_wrk(wrk, read, args.seconds, args.connections, auth)))
        stats_file = data / "flood.json"
        flood = start_flood(
            base,
            keys["flood"],
            "tiny",
            jobs["flood"],
            stats_file,
            chats=args.chats,
            streams=args.streams,
            uploads=args.uploads,
        )
        try:
            # At its caps; a server without caps (an older commit) never gets there: measure after 30 s.
            deadline = time.monotonic() + 30
            while not (capped := established(read_stats(stats_file), args.chats, args.streams, uploads=args.uploads)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            health_t0 = time.perf_counter()
            httpx.get(f"{base}/healthz", timeout=60)
            health_ms = (time.perf_counter() - health_t0) * 1000
            rounds.append(("flooded", run_wrk(wrk, read, args.seconds, args.connections, auth)))
        finally:
            flood.send_signal(signal.SIGTERM)
            flood.wait(timeout=60)
        flood_stats = read_stats(stats_file)
        time.sleep(2)  # the flood's chats drain
        rounds.append(("quiet again", run_wrk(wrk, read, args.seconds, args.connections, auth)))
    finally:
        for proc in (api, worker):
            proc.terminate()
            proc.wait(timeout=30)
        r = redis.Redis.from_url(REDIS)
        r.delete(TRAINING_QUEUE, INFERENCE_QUEUE)
        for k in r.scan_iter("tuneforge:inflight:*"):
            r.delete(k)
        shutil.rmtree(data, ignore_errors=True)

    quiet = rounds[0][1]
    lines = [
        f"The quiet tenant's `GET /v1/fine_tuning/jobs/{{id}}` by `wrk -t1 -c{args.connections} -d{args.seconds}s "
        f"--latency`; the flood: {args.chats} chat clients (`max_tokens` 1024, honouring Retry-After) and "
        f"{args.streams} job-stream clients of another organization, and {args.uploads} clients posting 256 KB files "
        "(broken on their last line: spooled, validated, refused), from a process of its own. One `tuneforge api` "
        "process, one inference worker (tiny Llama, one thread, niced), PostgreSQL and Redis on the same machine.",
        "",
        "| round | req/s | p50 ms | p99 ms | p99 / quiet p99 | timeouts (30 s) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['p99_ms'] / quiet['p99_ms']:.2f}x | {r['timeouts']:.0f} |"
            for name, r in rounds
        ),
        "",
        f"During the flood `/healthz` answered in {health_ms:.0f} ms; the caps were "
        f"{'reached' if capped else 'never reached'}. The flood's answers: "
        f"{dict(sorted(flood_stats['stats'].items()))}; most streams open at once: {flood_stats['most_open_streams']}.",
    ]
    record("Fairness: one tenant's reads while another floods chat and streams (wrk)", lines, args.record)


if __name__ == "__main__":
    main()

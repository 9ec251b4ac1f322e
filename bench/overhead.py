"""Service overhead: a job submitted through the API, the queue and a worker, against the bare
transformers + peft + bitsandbytes script (bench/bare_peft.py) doing the same training.

Same tiny Llama (built from a config), same Shakespeare chunks, batch size, sequence length, LoRA
settings, learning rate, schedule and seed. The service runs embedded (`tuneforge up`: SQLite, the
server-less broker, one worker), with a metric point, a progress update and a cancel check every
step. Reports the median per-step tokens/s of both and the per-step host overhead in ms.

    python -m bench.overhead [--steps 80] [--repeat 2] [--record]
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

BATCH, SEQ, LR = 8, 256, 2e-4
WARM = 5


def bare(model_dir: Path, data: Path, steps: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bare_peft", str(model_dir), str(data), "--steps", str(steps),
         "--batch-size", str(BATCH), "--max-seq-length", str(SEQ), "--lr", str(LR)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def service(data_dir: Path, data: Path, steps: int, port: int) -> dict[str, float]:
    from tuneforge.app.demo import _wait_ready

    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env["TUNEFORGE_DATA_DIR"] = str(data_dir)
    server = subprocess.Popen(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", "up", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, data_dir / "api_key", server)
        key = (data_dir / "api_key").read_text().strip()
        c = httpx.Client(base_url=f"{base}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        f = c.post("/files", files={"file": ("d.jsonl", data.read_bytes())}, data={"purpose": "fine-tune"}).json()
        body = {
            "model": "bench",
            "training_file": f["id"],
            "seed": 0,
            "training": {
                "max_steps": steps,
                "batch_size": BATCH,
                "max_seq_length": SEQ,
                "learning_rate": LR,
                "logging_every": 1,
                "group_by_length": False,  # the bare script batches randomly too
            },
            "scheduler": {"name": "cosine"},
            "data": {"validation_split": 0.0},
        }
        job = c.post("/fine_tuning/jobs", json=body).json()
        while (job := c.get(f"/fine_tuning/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
            time.sleep(2)  # a dashboard-like poll; the API process shares the machine's two cores
        assert job["status"] == "succeeded", job["error"]
        points = c.get(f"/fine_tuning/jobs/{job['id']}/metrics", params={"max_points": 100000}).json()["data"]
    finally:
        server.terminate()
        server.wait(timeout=60)
    step_ms, tps = [], []
    prev = 0
    for p in points:
        if p["tokens_per_second"] and p["num_tokens"]:
            tokens = p["num_tokens"] - prev
            prev = p["num_tokens"]
            tps.append(p["tokens_per_second"])
            step_ms.append(tokens / p["tokens_per_second"] * 1000)
    return {"tokens_per_s": statistics.median(tps[WARM:]), "step_ms": statistics.median(step_ms[WARM:])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--repeat", type=int, default=2, help="alternate bare and service runs this many times")
    p.add_argument("--port", type=int, default=8791)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()

    text = (SHARED_DATA / "tinyshakespeare.txt").read_text()
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "service": []}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "tf"
        model_dir = build_tiny_llama(data_dir / "models" / "bench", text[:200_000], hidden=256, layers=4)
        data = Path(tmp) / "data.jsonl"
        data.write_text("\n".join(json.dumps({"text": text[i : i + 700]}) for i in range(0, 400 * 700, 700)))
        for i in range(args.repeat):
            runs["bare"].append(bare(model_dir, data, args.steps))
            runs["service"].append(service(data_dir, data, args.steps, args.port + i))
            print(i, runs["bare"][-1], runs["service"][-1], flush=True)

    best = {k: max(v, key=lambda r: r["tokens_per_s"]) for k, v in runs.items()}
    ratio = best["service"]["tokens_per_s"] / best["bare"]["tokens_per_s"]
    overhead = best["service"]["step_ms"] - best["bare"]["step_ms"]
    lines = [
        f"tiny Llama (hidden 256, 4 layers), 4-bit NF4 + double quant, LoRA r=16 all-linear, batch {BATCH}, "
        f"{SEQ} tokens, {args.steps} steps, median per step after {WARM} warm-up steps, best of {args.repeat} "
        "alternating runs. The service records a metric point every step (`logging_every=1`).",
        "",
        "| | tokens/s | ms/step |",
        "|---|---|---|",
        f"| bare transformers + peft script | {best['bare']['tokens_per_s']:,.0f} | {best['bare']['step_ms']:.1f} |",
        f"| Tuneforge job (API + queue + worker) | {best['service']['tokens_per_s']:,.0f} | "
        f"{best['service']['step_ms']:.1f} |",
        "",
        f"Tuneforge / bare tokens/s: **{ratio:.3f}** (target 0.97); per-step host overhead **{overhead:+.1f} ms**.",
        "All runs: " + "; ".join(f"{k} " + ", ".join(f"{r['tokens_per_s']:,.0f}" for r in v) for k, v in runs.items()),
    ]
    record("Service overhead: Tuneforge job vs a bare peft loop", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

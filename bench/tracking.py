"""What job integrations cost a job's training: the engine's `run()` on a tiny Llama (unquantized, so a step is
short and a tracker's cost shows) with the worker's trackers attached (a W&B offline run, plus MLflow at a
server that is down, or one that accepts and never answers) against the same run with none, each in a fresh
process (so the trackers' first imports, W&B's and MLflow's, are paid in the measured run, as on a worker's
first such job), in ABBA order.

Compared: the training phase's seconds (the engine's own phase clock: optimizer steps, less evaluations,
samples and checkpoints) and the whole run's, and the training thread's cost of one `metrics()` call.

    python -m bench.tracking [--steps 60] [--pairs 2] [--record]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import SHARED_DATA, in_fresh_process, print_result, record
from bench.smollm2 import load_average

VARIANTS = ("none", "wandb+mlflow_down", "wandb+mlflow_stalled")


def _blackhole() -> tuple[socket.socket, int]:
    """A TCP server that accepts connections and never answers: a tracker that is slow, not down."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def child(args: dict[str, Any]) -> None:
    import os

    from tuneforge.app.core.config import Settings
    from tuneforge.app.jobs.request import JobCreate
    from tuneforge.worker import tracking
    from tuneforge.worker.training.reporter import MemoryReporter
    from tuneforge.worker.training.run import run

    variant = args["variant"]
    integrations: list[dict[str, Any]] = []
    if variant != "none":
        if variant.endswith("stalled"):
            _server, port = _blackhole()  # kept open by its accept thread
        else:
            with socket.socket() as s:  # a free port nothing listens on
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        uri = f"http://127.0.0.1:{port}"
        integrations = [
            {"type": "wandb", "wandb": {"project": "bench"}},
            {"type": "mlflow", "mlflow": {"tracking_uri": uri}},
        ]
        os.environ["TUNEFORGE_MLFLOW_TRACKING_URIS"] = f'["{uri}"]'
    body = {
        "model": "tiny",
        "training_file": "file-bench",
        "training": {"max_steps": args["steps"], "batch_size": 8, "max_seq_length": 128, "learning_rate": 1e-3},
        # Unquantized: bitsandbytes' 4-bit CPU kernels make a step seconds long, which would hide a tracker's cost.
        "quantization": {"bits": None},
        "samples": {"from_validation": 0},
        "data": {"validation_split": 0.0},
        "seed": 1,
        "integrations": integrations,
    }
    spec = JobCreate.model_validate(body).resolve()
    text = Path(args["text"]).read_text()
    rows = [{"text": text[i : i + 400]} for i in range(0, 400 * 8 * args["steps"], 400)]
    with tempfile.TemporaryDirectory() as out:
        settings = Settings(data_dir=Path(out) / "data", wandb_mode="offline")
        inner = MemoryReporter()
        trackers = tracking.Trackers.attach("ftjob-bench", spec, "tiny", settings, inner)
        started = time.perf_counter()
        result = run(spec, Path(args["model_dir"]), rows, None, Path(out) / "run", trackers.reporter)
        wall = time.perf_counter() - started
        trackers.finish("succeeded", result.final_metrics)
        phases = next(d for _, m, d in inner.events if m.startswith("Finished in") and d)["phases"]
        # The training thread's share of the trackers: one metrics() call, timed over many.
        point = {"step": 1, "epoch": 0.1, "loss": 1.0, "learning_rate": 1e-3, "grad_norm": 1.0}
        calls = 20_000
        t0 = time.perf_counter()
        for _ in range(calls):
            trackers.reporter.metrics(point)
        per_call_us = (time.perf_counter() - t0) / calls * 1e6
        tracking.drain(0.5)
    print_result({"wall_s": wall, "training_s": phases["training"]["seconds"], "metrics_call_us": per_call_us})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        import json

        child(json.loads(args.child))
        return 0
    from tuneforge.app.demo.tiny_model import build_tiny_llama

    text_path = SHARED_DATA / "tinyshakespeare.txt"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_llama(Path(tmp) / "tiny", text_path.read_text()[:200_000], hidden=64, layers=2)
        load_before = load_average()
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        order = [*VARIANTS, *reversed(VARIANTS)] * args.pairs
        for variant in order:
            payload = {"variant": variant, "steps": args.steps, "model_dir": str(model_dir), "text": str(text_path)}
            runs[variant].append(in_fresh_process("bench.tracking", payload, variant))
            print(variant, runs[variant][-1], flush=True)
    base = statistics.median(r["training_s"] for r in runs["none"])
    base_wall = statistics.median(r["wall_s"] for r in runs["none"])
    lines = [
        f"{args.steps} steps of an unquantized tiny Llama (hidden 64, 2 layers, batch 8, 128 tokens) through `run()`, "
        f"each run in a fresh process, order {' '.join(order)}; medians of {2 * args.pairs} runs per variant. "
        f"Load average before: {load_before}.",
        "",
        "| trackers | training phase (s) | vs none | whole run (s) | vs none | metrics() call (µs) |",
        "|---|---|---|---|---|---|",
    ]
    for variant, rs in runs.items():
        train = statistics.median(r["training_s"] for r in rs)
        wall = statistics.median(r["wall_s"] for r in rs)
        call = statistics.median(r["metrics_call_us"] for r in rs)
        lines.append(
            f"| {variant} | {train:.2f} | {train / base:.2f}x | {wall:.2f} | {wall / base_wall:.2f}x | {call:.1f} |"
        )
    record("Job integrations: what trackers cost training (bench.tracking)", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

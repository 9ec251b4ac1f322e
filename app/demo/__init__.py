"""`tuneforge demo`: the whole path on the embedded default, from nothing to a downloaded adapter.

It builds a tiny Llama (nothing is downloaded), writes a Shakespeare dataset, starts `tuneforge up`
(SQLite + kombu's SQLAlchemy broker + one worker), and then acts as a user would over HTTP: upload,
create a QLoRA job, poll it, download and unpack the adapter.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx

from app.core.config import get_settings
from contract.status import TERMINAL, JobStatus

DEMO_MODEL = "tiny-shakespeare"
SPARKS = "▁▂▃▄▅▆▇█"
# Public-domain text shipped in the wheel (the first 120 kB of tiny-shakespeare).
DEMO_TEXT = Path(__file__).resolve().parent / "data" / "tinyshakespeare_head.txt"


def sparkline(values: list[float], width: int = 60) -> str:
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - lo) / span * (len(SPARKS) - 1) + 0.5))] for v in values)


def _prepare(settings_models: Path, data_dir: Path) -> Path:
    model_dir = settings_models / DEMO_MODEL
    if not (model_dir / "config.json").is_file():
        from app.demo.tiny_model import build_tiny_llama

        print(f"building a tiny Llama at {model_dir} ...", flush=True)
        build_tiny_llama(model_dir, DEMO_TEXT.read_text(), hidden=64, layers=2)
    dataset = data_dir / "demo" / "shakespeare.jsonl"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    text = DEMO_TEXT.read_text()
    with dataset.open("w") as fh:
        for i in range(0, len(text) - 400, 400):
            fh.write(json.dumps({"text": text[i : i + 400]}) + "\n")
    return dataset


def _wait_ready(base: str, key_path: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until `tuneforge up` has written its key and /readyz (which needs a key) says ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tuneforge up exited with code {proc.returncode}")
        try:
            if key_path.is_file():
                auth = {"Authorization": f"Bearer {key_path.read_text().strip()}"}
                if httpx.get(f"{base}/readyz", headers=auth, timeout=2).status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("tuneforge up did not become ready in time")


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = get_settings()
    settings.ensure_dirs()
    dataset = _prepare(settings.models_dir, settings.data_dir)
    base = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--port", str(args.port)])
    try:
        _wait_ready(base, settings.data_dir / "api_key", server)
        key = (settings.data_dir / "api_key").read_text().strip()
        client = httpx.Client(base_url=f"{base}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        with dataset.open("rb") as fh:
            f = client.post("/files", files={"file": (dataset.name, fh)}, data={"purpose": "fine-tune"})
        f.raise_for_status()
        file = f.json()
        print(f"uploaded {file['id']}: {file['n_rows']} rows", flush=True)
        body = {
            "model": DEMO_MODEL,
            "training_file": file["id"],
            "suffix": "demo",
            "seed": 7,
            "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            "training": {"max_steps": args.steps, "batch_size": 8, "learning_rate": 1e-2, "save_every": 20},
            "scheduler": {"name": "cosine", "warmup_ratio": 0.05},
            "data": {"validation_split": 0.1},
        }
        r = client.post("/fine_tuning/jobs", json=body)
        if r.status_code != 200:
            print(r.json()["error"]["message"], file=sys.stderr)
            return 1
        job = r.json()
        print(f"created {job['id']} ({job['status']})", flush=True)
        last = None
        while job["status"] not in TERMINAL:
            time.sleep(1.0)
            job = client.get(f"/fine_tuning/jobs/{job['id']}").json()
            p = job["progress"]
            if job["status"] == JobStatus.RUNNING and not p["total_steps"]:
                line = "  running    (loading the model)"
            else:
                line = f"  {job['status']:<10} step {p['step']}/{p['total_steps'] or '?'}"
            if p["remaining_s"] is not None:
                line += f"  ETA {p['remaining_s']:.0f}s"
            if line != last:
                print(line, flush=True)
                last = line
        if job["status"] != JobStatus.SUCCEEDED:
            print(f"job {job['status']}: {job.get('error')}", file=sys.stderr)
            return 1
        series = client.get(f"/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
        losses = [p["loss"] for p in series if p.get("loss") is not None]
        out = Path(args.out).resolve() if args.out else settings.data_dir / "demo" / "adapter"
        archive = out.with_suffix(".tar.gz")
        with client.stream("GET", f"/fine_tuning/jobs/{job['id']}/adapter") as resp:
            resp.raise_for_status()
            with archive.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(out, filter="data")
        adapter = next(out.glob("*/adapter_config.json")).parent
        print()
        print(f"job:       {job['id']} succeeded, {job['trained_tokens']} tokens trained")
        print(f"loss:      {sparkline(losses)}  {losses[0]:.3f} -> {losses[-1]:.3f}")
        val = (job.get("final_metrics") or {}).get("validation")
        if val:
            print(f"held-out:  eval_loss {val['eval_loss']:.3f}, perplexity {val['perplexity']:.1f}")
        print(f"adapter:   {adapter}")
        print(f"wall time: {time.monotonic() - started:.1f}s")
        return 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()

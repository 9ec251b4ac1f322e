"""`tuneforge up` on the embedded default: SQLite, kombu's SQLAlchemy broker, a training and an inference
worker, no servers."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import tarfile
import time
from pathlib import Path

import httpx

from tests.helpers import free_port, shakespeare_rows, spawn, stop, wait_http


def test_up_runs_a_job_to_a_downloaded_adapter(tmp_path: Path, tiny_model: str) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    shutil.copytree(Path(os.environ["TUNEFORGE_MODELS_DIR"]) / tiny_model, data_dir / "models" / "tiny")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TUNEFORGE_DATABASE_URL", "TUNEFORGE_BROKER_URL", "TUNEFORGE_MODELS_DIR")
    }
    env["TUNEFORGE_DATA_DIR"] = str(data_dir)
    proc = spawn(["up", "--port", str(port)], env=env, log=tmp_path / "up.log", replace_env=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=120)
        assert (data_dir / "tuneforge.db").is_file()
        key = (data_dir / "api_key").read_text().strip()
        assert oct((data_dir / "api_key").stat().st_mode & 0o777) == "0o600"
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        body = "\n".join(json.dumps(r) for r in shakespeare_rows(32)).encode()
        f = c.post("/files", files={"file": ("d.jsonl", body)}, data={"purpose": "fine-tune"}).json()
        job = c.post(
            "/fine_tuning/jobs",
            json={"model": "tiny", "training_file": f["id"], "training": {"max_steps": 4, "batch_size": 8}},
        ).json()
        deadline = time.monotonic() + 150
        while job["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = c.get(f"/fine_tuning/jobs/{job['id']}").json()
        assert job["status"] == "succeeded", (job, (tmp_path / "up.log").read_text()[-3000:])
        r = c.get(f"/fine_tuning/jobs/{job['id']}/adapter")
        assert r.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            assert f"{job['id']}-adapter/adapter_model.safetensors" in tar.getnames()
        # Steps 1-4, and the step-0 baseline evaluation of the held-out split.
        assert c.get(f"/fine_tuning/jobs/{job['id']}/metrics").json()["total_points"] == 5
        assert (data_dir / "broker.db").is_file()  # the message went through the SQLite broker

        # Chat with the result: the embedded inference worker answers through the file reply channel.
        chat = {"model": job["fine_tuned_model"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        r = c.post("/chat/completions", json=chat, timeout=120)
        assert r.status_code == 200, (r.text, (data_dir / "inference-worker.log").read_text()[-3000:])
        assert r.json()["usage"]["completion_tokens"] <= 3
        with c.stream("POST", "/chat/completions", json={**chat, "stream": True}, timeout=120) as s:
            lines = [line for line in s.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["object"] == "chat.completion.chunk"
        assert not list((data_dir / "replies").glob("*.jsonl"))  # read channels are removed
    finally:
        stop(proc, timeout=40)
    # SIGTERM to `tuneforge up` (what docker stop and systemd send) stops its worker too.
    match = re.search(r"worker: +pid (\d+)", (tmp_path / "up.log").read_text())
    inference = re.search(r"inference: +pid (\d+)", (tmp_path / "up.log").read_text())
    assert match and inference, (tmp_path / "up.log").read_text()
    assert proc.returncode == 128 + signal.SIGTERM
    assert wait_gone(int(match.group(1)), timeout=40), "the worker outlived `tuneforge up`"
    assert wait_gone(int(inference.group(1)), timeout=40), "the inference worker outlived `tuneforge up`"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):  # exited, waiting for init to reap it
            return True
        time.sleep(0.2)
    return False

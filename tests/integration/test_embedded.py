"""`tuneforge up` on the embedded default: SQLite, kombu's SQLAlchemy broker, a training and an inference
worker, no servers."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import ROOT, free_port, shakespeare_rows, spawn, stop, wait_http, wait_job


def test_up_runs_a_job_to_a_downloaded_adapter(tmp_path: Path, tiny_model: str) -> None:
    """Started as a user would: the installed `tuneforge` command, from a folder whose own `app`, `worker`
    and `tuneforge` packages fail on import (the root of some FastAPI project), which Tuneforge, its
    workers and their children must never import in place of their own."""
    project = tmp_path / "someone-elses-project"
    for name in ("app", "worker", "storage", "contract", "migrations", "tuneforge"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"raise ImportError('the current directory shadowed {name}')\n")
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
    command = (str(Path(sys.executable).with_name("tuneforge")),)
    proc = spawn(
        ["up", "--port", str(port)], env=env, log=tmp_path / "up.log", replace_env=True, cwd=project, entry=command
    )
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
        job = wait_job(
            lambda: c.get(f"/fine_tuning/jobs/{job['id']}").json(),
            idle=150,
            log=lambda: (tmp_path / "up.log").read_text()[-3000:],
        )
        assert job["status"] == "succeeded", (job, (tmp_path / "up.log").read_text()[-3000:])
        r = c.get(f"/fine_tuning/jobs/{job['id']}/adapter")
        assert r.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            assert f"{job['id']}-adapter/adapter_model.safetensors" in tar.getnames()
        # Steps 1-4, and the step-0 baseline evaluation of the held-out split.
        assert c.get(f"/fine_tuning/jobs/{job['id']}/metrics").json()["total_points"] == 5
        assert (data_dir / "broker.db").is_file()  # the message went through the SQLite broker
        # Sample generations are on by default: two held-out prompts, before the first step and at the end.
        samples = c.get(f"/fine_tuning/jobs/{job['id']}/samples").json()["data"]
        assert sorted((s["step"], s["index"]) for s in samples) == [(0, 0), (0, 1), (4, 0), (4, 1)]
        assert all(0 < s["tokens"] <= 16 for s in samples)

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
    assert "shadowed" not in (tmp_path / "up.log").read_text() + (data_dir / "worker.log").read_text()
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


def test_demo_runs_its_whole_path_on_the_tiny_model(tmp_path: Path) -> None:
    """`tuneforge demo --tiny`: the SmolLM2 demo's code path (model put in place, SMS split, `tuneforge up`,
    chat scoring before and after, a QLoRA job with a validation file, samples, the adapter), on a tiny
    random Llama with a handful of rows so that it takes seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env["TUNEFORGE_DATA_DIR"] = str(tmp_path / "data")
    args = ["demo", "--tiny", "--train-rows", "8", "--test-rows", "2", "--steps", "1", "--port", str(free_port())]
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = _lines_while_it_moves(proc, idle=240)
    out = "".join(lines)
    assert proc.returncode == 0, out[-4000:]
    by_head = {line.split(":", 1)[0]: line for line in lines if re.match(r"^[a-z][a-z ]*:", line)}
    assert "building a tiny random Llama" in out
    assert "2 held-out messages" in by_head["task"]
    assert re.search(r"accuracy \d+\.\d% on 2 held-out messages", by_head["before"])
    assert re.search(r"\d+\.\d% -> \d+\.\d% on 2 held-out messages", by_head["accuracy"])
    assert re.search(r"\d+\.\d{3} -> \d+\.\d{3} .*step 0 -> step 1", by_head["val loss"])
    # Both held-out prompts, each with what the base said (step 0) and what the adapter says (step 1).
    assert "step 0 (the base) -> step 1" in by_head["samples"]
    assert len(re.findall(r"^  \[(spam|ham)\] ", out, re.M)) == 2
    assert len(re.findall(r"^      before: ", out, re.M)) == len(re.findall(r"^      after:  ", out, re.M)) == 2
    adapter = Path(by_head["adapter"].split()[1])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert by_head["model id"].split()[2].startswith("ft:tiny-demo-llama:")
    assert re.search(r"^wall time: .*CPU time", out, re.M)


def _lines_while_it_moves(proc: subprocess.Popen[str], idle: float) -> list[str]:
    """The process's output lines until it exits; it fails the test if `idle` seconds pass without a line."""
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    lines: list[str] = []
    while True:
        try:
            line = q.get(timeout=idle)
        except queue.Empty:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
            raise AssertionError(f"no output for {idle:.0f}s:\n{''.join(lines)[-4000:]}") from None
        if line is None:
            proc.wait(timeout=60)
            return lines
        lines.append(line)

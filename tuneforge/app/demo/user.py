"""The demo's user: everything it does goes over Tuneforge's public HTTP API, as a client would."""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tuneforge.app.demo import sms_task
from tuneforge.contract.status import TERMINAL, JobStatus

# The first chat completion for a model loads it in the inference worker, which takes a while on a CPU.
CHAT_TIMEOUT_S = 600.0


class DemoUser:
    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.Client(base_url=f"{base_url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def upload(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as fh:
            r = self.http.post("/files", files={"file": (path.name, fh)}, data={"purpose": "fine-tune"})
        r.raise_for_status()
        return dict(r.json())

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post("/fine_tuning/jobs", json=body)
        if r.status_code != 200:
            raise SystemExit(f"creating the job failed: {r.json()['error']['message']}")
        return dict(r.json())

    def watch(self, job: dict[str, Any], show: Callable[[str], None], poll_s: float = 1.0) -> dict[str, Any]:
        """Polls the job until it ends, showing a line (with the ETA) whenever its status or step changes."""
        last = None
        while job["status"] not in TERMINAL:
            time.sleep(poll_s)
            job = self.http.get(f"/fine_tuning/jobs/{job['id']}").json()
            now = (job["status"], job["progress"]["step"], job["progress"]["total_steps"])
            if now != last:
                show(_progress_line(job))
                last = now
        return job

    def chat_replies(self, model: str, rows: list[dict[str, str]], max_tokens: int) -> list[str]:
        """Greedy (temperature 0) answers to each held-out message, one chat completion each."""
        replies = []
        for row in rows:
            body = {
                "model": model,
                "messages": sms_task.prompt_messages(row["text"]),
                "temperature": 0,
                "max_tokens": max_tokens,
            }
            r = self.http.post("/chat/completions", json=body, timeout=CHAT_TIMEOUT_S)
            if r.status_code != 200:
                raise SystemExit(f"chat completion with {model} failed: {r.text}")
            replies.append(str(r.json()["choices"][0]["message"]["content"] or ""))
        return replies

    def samples(self, job_id: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/fine_tuning/jobs/{job_id}/samples")
        r.raise_for_status()
        return list(r.json()["data"])

    def download_adapter(self, job_id: str, out: Path) -> Path:
        """The final adapter, saved as `<out>.tar.gz` and unpacked under `out`; returns its folder."""
        archive = out.with_suffix(".tar.gz")
        archive.parent.mkdir(parents=True, exist_ok=True)
        with self.http.stream("GET", f"/fine_tuning/jobs/{job_id}/adapter") as resp:
            resp.raise_for_status()
            with archive.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            top = {Path(name).parts[0] for name in tar.getnames()}
            tar.extractall(out, filter="data")  # the "data" filter refuses links out and absolute paths
        # An earlier run's adapter may sit in `out` too: this job's folder is the archive's top level.
        [folder] = top
        return out / folder


def _progress_line(job: dict[str, Any]) -> str:
    p = job["progress"]
    if job["status"] == JobStatus.RUNNING and not p["total_steps"]:
        line = f"  {job['status']:<10} (loading the model, step-0 evaluation and samples)"
    else:
        line = f"  {job['status']:<10} step {p['step']}/{p['total_steps'] or '?'}"
    if p["remaining_s"] is not None and job["status"] not in TERMINAL:
        line += f"  ETA {p['remaining_s']:.0f}s"
    return line


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

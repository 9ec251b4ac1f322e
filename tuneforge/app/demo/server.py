"""`tuneforge up` as a child of the demo: started, waited for, and stopped with its workers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_up(port: int) -> subprocess.Popen[bytes]:
    """The embedded default (SQLite, kombu's SQLAlchemy broker, a training and an inference worker)."""
    return subprocess.Popen([sys.executable, "-P", "-m", "tuneforge.app.cli", "up", "--port", str(port)])


def wait_ready(base: str, key_path: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
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


def stop(proc: subprocess.Popen[bytes], timeout: float = 40) -> None:
    """SIGTERM, which `tuneforge up` passes on to its workers before it exits."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

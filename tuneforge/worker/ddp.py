"""Launch a job as N data-parallel processes: rank 0 in this (the worker's) process, with the
database reporter, and ranks 1..N-1 as subprocesses (`python -m worker.ddp <input>`) that report
nothing. See tuneforge/worker/training/distributed.py for what each rank does.

A rank that dies (kill -9, a lost device) breaks the next collective on every other rank; rank 0
then raises `RankLost`, and the runner hands the job back to the queue to resume from its last
checkpoint. Ranks 1..N-1 die with rank 0 (PR_SET_PDEATHSIG) and ignore SIGTERM: a worker's
shutdown reaches them as rank 0's stop request, so every rank stops at the same step.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tuneforge.contract.spec import JobSpec
from tuneforge.worker.training import distributed
from tuneforge.worker.training.errors import StopTraining, TrainingError
from tuneforge.worker.training.reporter import Reporter
from tuneforge.worker.training.run import RunResult, run


class RankLost(Exception):
    """Another rank of this job died."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _a_rank_died(children: list[subprocess.Popen[bytes]], grace_seconds: float = 5.0) -> bool:
    # A killed rank's sockets are reset before the kernel makes it waitable, so the collective on
    # rank 0 can fail a moment before poll() sees the death: give the exit that long to show.
    deadline = time.monotonic() + grace_seconds
    while True:
        if any(c.poll() is not None and c.returncode != 0 for c in children):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def run_distributed(
    devices: int,
    raw_spec: dict[str, Any],
    model_dir: Path,
    rows: list[dict[str, Any]],
    validation: list[dict[str, Any]] | None,
    out_dir: Path,
    reporter: Reporter,
    *,
    attempt: int,
    timeout_seconds: float,
    init_adapter: Path | None = None,
) -> RunResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = out_dir / ".ddp-input.json"
    payload.write_text(
        json.dumps(
            {
                "spec": raw_spec,
                "model_dir": str(model_dir),
                "rows": rows,
                "validation": validation,
                "out_dir": str(out_dir),
                "attempt": attempt,
                "timeout": timeout_seconds,
                "init_adapter": str(init_adapter) if init_adapter is not None else None,
            }
        )
    )
    group = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(devices)}
    children = [
        subprocess.Popen(
            [sys.executable, "-P", "-m", "tuneforge.worker.ddp", str(payload)],
            env={**os.environ, **group, "RANK": str(i), "LOCAL_RANK": str(i)},
            preexec_fn=_die_with_parent,  # the worker runs jobs in its main thread; no locks are held here
        )
        for i in range(1, devices)
    ]
    saved = {k: os.environ.get(k) for k in (*group, "RANK", "LOCAL_RANK")}
    os.environ.update({**group, "RANK": "0", "LOCAL_RANK": "0"})
    try:
        distributed.init(timeout_seconds)
        return run(
            JobSpec.model_validate(raw_spec),
            model_dir,
            rows,
            validation,
            out_dir,
            reporter,
            attempt=attempt,
            init_adapter=init_adapter,
        )
    except (StopTraining, TrainingError):
        raise
    except Exception as exc:
        if _a_rank_died(children):
            raise RankLost(f"a rank of this {devices}-device job died") from exc
        raise
    finally:
        distributed.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for c in children:
            try:
                c.wait(timeout=30)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        payload.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """A rank other than 0."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    job = json.loads(Path(argv[0]).read_text())
    distributed.init(float(job["timeout"]))
    try:
        run(
            JobSpec.model_validate(job["spec"]),
            Path(job["model_dir"]),
            job["rows"],
            job["validation"],
            Path(job["out_dir"]),
            distributed.SilentReporter(),
            attempt=int(job["attempt"]),
            init_adapter=Path(job["init_adapter"]) if job.get("init_adapter") else None,
        )
    except StopTraining:
        return 0
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

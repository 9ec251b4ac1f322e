"""Multi-device jobs on the CPU with gloo: N processes give the loss curve of one process with the
same global batch, and a rank killed with SIGKILL is noticed (the job resumes; it does not hang)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import make_spec, shakespeare_rows

if TYPE_CHECKING:
    from tuneforge.worker.training.reporter import MemoryReporter

# Dropout off: ranks draw their own masks, so a 2-rank step differs from a 1-rank one by noise.
SPEC = {
    "training": {"max_steps": 8, "batch_size": 4, "logging_every": 1, "learning_rate": 1e-3, "save_every": 4},
    "lora": {"dropout": 0.0},
}


@pytest.fixture
def model_dir(tiny_model: str) -> Path:
    return Path(os.environ["TUNEFORGE_MODELS_DIR"]) / tiny_model


def test_two_processes_give_the_loss_curve_of_one_with_the_same_global_batch(model_dir: Path, tmp_path: Path) -> None:
    from tuneforge.worker.ddp import run_distributed
    from tuneforge.worker.training.reporter import MemoryReporter
    from tuneforge.worker.training.run import run

    spec = make_spec(**SPEC)
    rows = shakespeare_rows(32)
    one = MemoryReporter()
    run(spec, model_dir, rows, None, tmp_path / "one", one)
    two = MemoryReporter()
    result = run_distributed(
        2, spec.model_dump(mode="json"), model_dir, rows, None, tmp_path / "two", two, attempt=1, timeout_seconds=60
    )
    a = [p["loss"] for p in one.points if "loss" in p]
    b = [p["loss"] for p in two.points if "loss" in p]
    assert len(a) == len(b) == 8
    assert b == pytest.approx(a, rel=2e-2), (a, b)
    assert a[-1] < a[0], "it learns"
    # Rank 0 alone checkpoints and publishes; the tokens are the global batch's.
    assert [s for s, _ in two.checkpoints] == [4, 8] and result.manifest
    assert result.trained_tokens == pytest.approx(run_tokens(one), rel=0.01)


def run_tokens(rep: MemoryReporter) -> int:
    return max(int(p.get("num_tokens") or 0) for p in rep.points)


def test_a_rank_killed_mid_run_raises_rank_lost_instead_of_hanging(model_dir: Path, tmp_path: Path) -> None:
    import psutil

    from tuneforge.worker.ddp import RankLost, run_distributed
    from tuneforge.worker.training.reporter import MemoryReporter

    spec = make_spec(training={**SPEC["training"], "max_steps": 2000}, lora={"dropout": 0.0})
    rep = MemoryReporter()

    def kill_rank_one() -> None:
        while rep.last_step < 3:
            time.sleep(0.05)
        for child in psutil.Process().children():
            if "tuneforge.worker.ddp" in " ".join(child.cmdline()):
                os.kill(child.pid, signal.SIGKILL)

    threading.Thread(target=kill_rank_one, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(RankLost):
        run_distributed(
            2, spec.model_dump(mode="json"), model_dir, shakespeare_rows(32), None, tmp_path, rep,
            attempt=1, timeout_seconds=60,
        )  # fmt: skip
    assert 3 <= rep.last_step < 2000
    assert time.monotonic() - started < 120


def test_through_the_runner_a_dead_rank_requeues_the_job_and_the_next_attempt_resumes(
    client: httpx.Client, tiny_model: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil
    from sqlalchemy import select

    from tests.helpers import upload_jsonl
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Checkpoint
    from tuneforge.worker.runner import execute

    monkeypatch.setattr(settings, "devices_per_job", 2)
    file_id = upload_jsonl(client, shakespeare_rows(32))["id"]
    body = {"model": tiny_model, "training_file": file_id, "seed": 5, **SPEC}
    body["training"] = {**SPEC["training"], "max_steps": 12, "save_every": 2}
    job = client.post("/v1/fine_tuning/jobs", json=body).json()

    def kill_rank_one_after_a_checkpoint() -> None:
        while True:
            with session_scope() as s:
                if s.scalars(select(Checkpoint.step_number).where(Checkpoint.job_id == job["id"])).first():
                    break
            time.sleep(0.1)
        for child in psutil.Process().children():
            if "tuneforge.worker.ddp" in " ".join(child.cmdline()):
                os.kill(child.pid, signal.SIGKILL)

    threading.Thread(target=kill_rank_one_after_a_checkpoint, daemon=True).start()
    assert execute(job["id"], worker_id="w-ddp") == "requeued"
    requeued = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert requeued["status"] == "queued"
    assert execute(job["id"], worker_id="w-ddp-2") == "succeeded"
    events = [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job['id']}/events?limit=100").json()["data"]]
    assert any(m.startswith("A rank of this multi-device job died") for m in events), events
    assert any(m.startswith("Resumed from step") for m in events), events

"""Data prepared once, through the worker against the real database and artifact store: the first job
on a file prepares it (kept under `prepared/<key>` with a manifest), a resumed attempt and another job
on the same file reuse it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import alpaca_row, shakespeare_rows, upload_jsonl
from tuneforge.app.core.storage import get_store
from tuneforge.contract.status import StopReason
from tuneforge.storage import MANIFEST
from tuneforge.worker.runner import execute
from tuneforge.worker.training.errors import StopTraining

if TYPE_CHECKING:
    from tuneforge.app.core.config import Settings
    from tuneforge.contract.spec import JobSpec
    from tuneforge.worker.training.reporter import Reporter
    from tuneforge.worker.training.run import RunResult


def create(client: httpx.Client, model: str, file_id: str, **over: object) -> str:
    body = {"model": model, "training_file": file_id, **over}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def data_ready(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    return [e["data"] for e in reversed(events) if e["message"].startswith("Data ready")]


def test_prepared_once_then_reused_by_a_resume_and_by_other_jobs(
    client: httpx.Client, tiny_model: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuneforge.worker.runner as runner

    rows = shakespeare_rows(30) + [alpaca_row(i) for i in range(10)]
    file_id = upload_jsonl(client, rows)["id"]
    training = {"max_steps": 4, "batch_size": 4, "save_every": 1, "max_seq_length": 96}
    job = create(client, tiny_model, file_id, seed=1, training=training)

    # Attempt 1 stops after its first checkpoint, as a worker shutting down does: the job goes back to
    # the queue as attempt 2, which resumes from that checkpoint.
    real_run = runner.run

    def stop_after_first_checkpoint(
        spec: JobSpec, model_dir: Path, rows: Any, val: Any, out_dir: Path, reporter: Reporter, **kw: Any
    ) -> RunResult:
        record = reporter.checkpoint

        def checkpoint_then_stop(*args: Any, **kwargs: Any) -> None:
            record(*args, **kwargs)
            raise StopTraining(StopReason.SHUTDOWN)

        reporter.checkpoint = checkpoint_then_stop  # type: ignore[method-assign]  # this one reporter's
        return real_run(spec, model_dir, rows, val, out_dir, reporter, **kw)

    monkeypatch.setattr(runner, "run", stop_after_first_checkpoint)
    assert execute(job, worker_id="w-1") == "requeued"
    monkeypatch.setattr(runner, "run", real_run)
    assert execute(job, worker_id="w-2") == "succeeded"
    first, resumed = data_ready(client, job)
    assert first["prepared_data"] == "prepared" and resumed["prepared_data"] == "reused"
    assert first["prepared_key"] == resumed["prepared_key"]
    assert {k: v for k, v in first.items() if k not in ("prepared_data", "prepare_seconds")} == {
        k: v for k, v in resumed.items() if k not in ("prepared_data", "prepare_seconds")
    }
    key = first["prepared_key"]
    store = get_store(settings)
    assert store.exists(f"prepared/{key}/{MANIFEST}") and store.exists(f"prepared/{key}/tokens.bin")

    # Another job on the same file, with another seed and split: the same store.
    other = create(client, tiny_model, file_id, seed=2, training=training, data={"validation_split": 0.25})
    assert execute(other, worker_id="w-3") == "succeeded"
    (ready,) = data_ready(client, other)
    assert ready["prepared_data"] == "reused" and ready["prepared_key"] == key
    # (Settings that change the tokens miss: tests/worker/training/test_prepare.py.)

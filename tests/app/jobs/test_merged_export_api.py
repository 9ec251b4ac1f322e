"""`?format=merged` on the adapter route: what is refused before any model is loaded, and one merge
for simultaneous first requests."""

from __future__ import annotations

import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import make_spec, shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings


def test_merged_export_of_a_classification_job_says_what_is_supported(client: httpx.Client, tiny_model: str) -> None:
    rows = [{"text": f"message {i}", "label": "spam" if i % 2 else "ham"} for i in range(20)]
    file = upload_jsonl(client, rows, name="cls.jsonl")
    r = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": tiny_model, "training_file": file["id"], "task": "sequence_classification"},
    )
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    r = client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter", params={"format": "merged"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "format" and err["code"] == "merge_not_supported"
    assert "causal_lm" in err["message"] and "format=peft" in err["message"]
    r = client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter", params={"format": "onnx"})
    assert r.status_code == 400 and "format" in r.text
    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")


def test_simultaneous_first_requests_share_one_merge(
    settings: Settings,
    tiny_model: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two first downloads of one merged export at once: both get the folder, and the merge runs once
    (before the lock, the second merge failed to rename onto the first one's folder: a 500)."""
    from tuneforge.app.db.models import Job
    from tuneforge.app.jobs import merged
    from tuneforge.worker.training.reporter import MemoryReporter
    from tuneforge.worker.training.run import run

    model_dir = settings.models_dir / tiny_model
    spec = make_spec(training={"batch_size": 8, "max_steps": 2})
    adapter = run(spec, model_dir, shakespeare_rows(16), None, tmp_path / "job", MemoryReporter()).adapter_dir
    job = Job(id=f"ftjob-merge-race-{uuid.uuid4().hex[:8]}", spec=spec.model_dump(mode="json"))

    real_run, merges = subprocess.run, []

    def counting_run(*args: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
        merges.append(args)
        return real_run(*args, **kw)

    monkeypatch.setattr(merged.subprocess, "run", counting_run)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(merged.merged_dir, settings, job, model_dir, adapter, None) for _ in range(2)]
        folders = [f.result() for f in futures]
    assert folders[0] == folders[1] and (folders[0] / "config.json").is_file()
    assert len(merges) == 1

"""DPO and continued training over real processes, driven by the official openai SDK."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from openai import OpenAI

from tests.helpers import preference_rows, wait_sdk_job


def test_sdk_dpo_job_then_continue_from_its_adapter(
    sdk: OpenAI,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
    tmp_path: Path,
) -> None:
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in preference_rows(32)) + "\n")
    with data.open("rb") as fh:
        file = sdk.files.create(file=fh, purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model=tiny_model,
        training_file=file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5, "batch_size": 8}}},
        extra_body={"training": {"max_steps": 4, "learning_rate": 5e-2}},
    )
    assert job.method is not None and job.method.type == "dpo"
    assert job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    assert job.method.dpo.hyperparameters.beta == 0.5
    done = wait_sdk_job(sdk, job.id)
    assert done.status == "succeeded", done.error
    assert "preference_accuracy" in (done.model_extra or {})["final_metrics"]["validation"]

    more = sdk.fine_tuning.jobs.create(
        model=tiny_model,
        training_file=file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5, "batch_size": 8}}},
        extra_body={"training": {"max_steps": 2, "learning_rate": 5e-2}, "from_checkpoint": done.fine_tuned_model},
    )
    finished = wait_sdk_job(sdk, more.id)
    assert finished.status == "succeeded", finished.error
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(more.id, limit=100).data]
    assert f"Starting from the adapter of {done.fine_tuned_model}" in messages

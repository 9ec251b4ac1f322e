"""Pause and resume over real processes (`tuneforge api` + `tuneforge worker`), driven by the
official openai SDK's `jobs.pause` / `jobs.resume`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.helpers import TERMINAL, job_progress, shakespeare_rows, wait_sdk_job, worker_log


def test_sdk_pause_frees_the_worker_and_resume_continues(
    sdk: OpenAI,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
    tmp_path: Path,
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in shakespeare_rows(48)) + "\n")
    with data.open("rb") as fh:
        file = sdk.files.create(file=fh, purpose="fine-tune")
    long = sdk.fine_tuning.jobs.create(
        model=tiny_model, training_file=file.id, seed=1, extra_body={"training": {"max_steps": 40, "batch_size": 8}}
    )
    wait_sdk_job(sdk, long.id, lambda j: j.status == "running" and (job_progress(j)[2] or 0) > 0)

    assert sdk.fine_tuning.jobs.pause(long.id).status in ("running", "paused")
    paused = wait_sdk_job(sdk, long.id, lambda j: j.status in {"paused", *TERMINAL})
    assert paused.status == "paused", (paused.error, worker_log())
    step = (paused.model_extra or {})["progress"]["step"]
    assert 0 < step < 40
    assert [c.step_number for c in sdk.fine_tuning.jobs.checkpoints.list(long.id).data] == [step]

    # The worker is free: another job runs to the end while the first one stays paused.
    short = sdk.fine_tuning.jobs.create(
        model=tiny_model, training_file=file.id, extra_body={"training": {"max_steps": 2, "batch_size": 2}}
    )
    assert wait_sdk_job(sdk, short.id).status == "succeeded", worker_log()
    assert sdk.fine_tuning.jobs.retrieve(long.id).status == "paused"  # type: ignore[comparison-overlap]  # not in the SDK's Literal

    assert sdk.fine_tuning.jobs.resume(long.id).status == "queued"
    done = wait_sdk_job(sdk, long.id)
    assert done.status == "succeeded", (done.error, worker_log())
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(long.id, limit=100).data]
    assert f"Resumed from step {step} (attempt 1)" in messages
    assert f"Job paused at step {step}; checkpoint saved" in messages

    # A finished job can be neither paused nor resumed, and the SDK does not retry the 409.
    for call in (sdk.fine_tuning.jobs.pause, sdk.fine_tuning.jobs.resume):
        with pytest.raises(openai.ConflictError) as info:
            call(long.id)
        assert info.value.response.headers["x-should-retry"] == "false"

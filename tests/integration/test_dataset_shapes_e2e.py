"""Every data shape users bring, end to end through the official openai SDK against real `tuneforge api`
and `tuneforge worker` processes: OpenAI function calling with weights, alpaca, ShareGPT, and
data.augmentation; a template that cannot render tools fails fast with invalid_spec."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.helpers import alpaca_row, plain_template_model, sharegpt_row, weather_chat, worker_log

TERMINAL = {"succeeded", "failed", "cancelled"}
STEPS = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2}


def upload(sdk: OpenAI, rows: list[dict[str, Any]]) -> Any:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    return sdk.files.create(file=("data.jsonl", io.BytesIO(body)), purpose="fine-tune")


def wait_all(sdk: OpenAI, ids: list[str], per_job: float = 120) -> dict[str, Any]:
    """Waits while the jobs make progress: the deadline moves whenever one of them finishes."""
    done: dict[str, Any] = {}
    deadline = time.monotonic() + per_job
    while len(done) < len(ids):
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs still running: {set(ids) - set(done)}\n{worker_log()}")
        for job_id in ids:
            if job_id not in done and (job := sdk.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL:
                done[job_id] = job
                deadline = time.monotonic() + per_job
        time.sleep(0.5)
    return done


def data_ready(sdk: OpenAI, job_id: str) -> dict[str, Any]:
    events = sdk.fine_tuning.jobs.list_events(job_id, limit=100).data
    event = next(e for e in events if e.message.startswith("Data ready"))
    return dict(event.data or {})  # type: ignore[call-overload]


def test_every_data_shape_trains(
    sdk: OpenAI,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
) -> None:
    tools = upload(sdk, [weather_chat(i) for i in range(8)])
    alpaca = upload(sdk, [alpaca_row(i) for i in range(8)])
    sharegpt = upload(sdk, [sharegpt_row(i) for i in range(8)])
    assert (tools.data_format, alpaca.data_format, sharegpt.data_format) == (
        "messages",
        "alpaca",
        "sharegpt",
    )
    augmentation = {
        "copies": 2,
        "seed": 0,
        "operations": [
            {"name": "synonym_replacement", "p": 0.1},
            {"name": "random_insertion", "p": 0.1},
            {"name": "random_swap", "p": 0.1},
            {"name": "random_deletion", "p": 0.1},
            {"name": "char_noise", "p": 0.05},
        ],
    }
    bodies: dict[str, tuple[str, dict[str, Any]]] = {
        "tools": (tools.id, {"data": {"validation_split": 0.25}}),
        "alpaca": (alpaca.id, {"data": {"format": "alpaca", "validation_split": 0.25, "augmentation": augmentation}}),
        "sharegpt": (sharegpt.id, {"data": {"validation_split": 0.25}}),
    }
    jobs = {
        name: sdk.fine_tuning.jobs.create(
            model=tiny_model,
            training_file=file_id,
            seed=5,
            extra_body={"quantization": {"bits": None}, "training": STEPS, **extra},
        ).id
        for name, (file_id, extra) in bodies.items()
    }
    done = wait_all(sdk, list(jobs.values()))
    for name, job_id in jobs.items():
        assert done[job_id].status == "succeeded", (name, done[job_id].error, worker_log())
    ready = {name: data_ready(sdk, job_id) for name, job_id in jobs.items()}
    for name, data in ready.items():
        assert 0 < data["loss_tokens"] < data["train_tokens"], (name, data)
    assert ready["tools"]["train_examples"] == 6 and ready["tools"]["augmented"] == 0
    assert ready["alpaca"]["augmented"] == 12 and ready["alpaca"]["train_examples"] == 18  # 6 + 2 copies each


def test_template_without_tools_fails_fast_with_invalid_spec(
    sdk: OpenAI,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
) -> None:
    plain = plain_template_model(Path(os.environ["TUNEFORGE_MODELS_DIR"]), tiny_model)
    f = upload(sdk, [weather_chat(i) for i in range(4)])
    job = sdk.fine_tuning.jobs.create(model=plain, training_file=f.id, extra_body={"training": STEPS})
    done = wait_all(sdk, [job.id])[job.id]
    assert done.status == "failed" and done.error is not None
    assert done.error.code == "invalid_spec" and "does not render `tools`" in done.error.message
    assert not sdk.fine_tuning.jobs.checkpoints.list(job.id).data  # refused before training


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**alpaca_row(), "output": ""}, "line 2: `output` is empty"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},
            "line 2: messages[1].weight must be 0 or 1",
        ),
        (
            {
                "messages": [
                    {"role": "tool", "tool_call_id": "c", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "line 2: messages[0].tool_call_id 'c' matches no earlier assistant tool call",
        ),
    ],
)
def test_bad_rows_are_refused_at_upload_through_the_sdk(sdk: OpenAI, row: dict[str, Any], message: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        upload(sdk, [alpaca_row(), row])
    assert message in info.value.message

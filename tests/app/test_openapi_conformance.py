"""Every response of the Files, Uploads, Fine-tuning, Models, Chat and Completions routes, validated
against OpenAI's OpenAPI document (2.3.0, tests/fixtures/openai_openapi) as it arrives, and every
object the official SDK returns re-read against the SDK's own types (tests/conformance.py).

One API (`tuneforge api`), one training worker and one inference worker, real processes: the job
states come from driving them (a job queued behind a running one, paused, resumed, cancelled while
training, trained to the end); the few a short test cannot reach by driving (failed, and each fine
status held still) are rows written beside them and read through the same routes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.conformance import Conformance, sdk_errors
from tests.helpers import (
    TERMINAL,
    insert_job,
    job_progress,
    make_key,
    org_id_of,
    preference_rows,
    shakespeare_rows,
    wait_sdk_job,
    worker_log,
)
from tuneforge.app.db.types import utcnow
from tuneforge.contract.status import JobStatus

JOBS = "/v1/fine_tuning/jobs"
STRING_CHECK: Any = {
    "type": "string_check",
    "name": "has_e",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
    "operation": "like",
}


@pytest.fixture(scope="module")
def conformance() -> Conformance:
    return Conformance()


@pytest.fixture(scope="module")
def checked(conformance: Conformance, live_api: str, api_key: str) -> Iterator[OpenAI]:
    """The official SDK over a client that validates every response it receives."""
    http = conformance.client(live_api)
    yield OpenAI(base_url=f"{live_api}/v1", api_key=api_key, max_retries=0, timeout=120, http_client=http)
    http.close()


@pytest.fixture(scope="module")
def checked_admin(conformance: Conformance, live_api: str) -> Iterator[OpenAI]:
    """The same, with an admin key of the suite's organization (sharing a checkpoint needs one)."""
    http = conformance.client(live_api)
    key = make_key("acme", admin=True)
    yield OpenAI(base_url=f"{live_api}/v1", api_key=key, max_retries=0, timeout=120, http_client=http)
    http.close()


@pytest.fixture(scope="module")
def raw(conformance: Conformance, live_api: str, api_key: str) -> Iterator[Any]:
    """Plain HTTP for what the SDK cannot send (a body that is not JSON, a token-array prompt)."""
    with conformance.client(live_api, {"Authorization": f"Bearer {api_key}"}) as http:
        yield http


def sdk_ok(*objects: Any) -> None:
    problems = [p for obj in objects for p in sdk_errors(obj)]
    assert not problems, "\n".join(problems)


def upload(sdk: OpenAI, tmp_path: Path, rows: list[dict[str, Any]], name: str = "train.jsonl") -> Any:
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with path.open("rb") as fh:
        return sdk.files.create(file=fh, purpose="fine-tune")


def test_files_uploads_and_errors_conform(
    checked: OpenAI, raw: Any, conformance: Conformance, tiny_model: str, tmp_path: Path
) -> None:
    f = upload(checked, tmp_path, shakespeare_rows(8))
    listed = checked.files.list(limit=2)
    empty = checked.files.list(purpose="batch")  # no such files: an empty page
    assert empty.data == [] and raw.get("/v1/files", params={"purpose": "batch"}).json()["first_id"] == ""
    sdk_ok(f, checked.files.retrieve(f.id), listed, empty)
    assert checked.files.content(f.id).content.startswith(b"{")

    path = tmp_path / "parts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in shakespeare_rows(40)) + "\n")
    done = checked.uploads.upload_file_chunked(file=path, mime_type="text/jsonl", purpose="fine-tune", part_size=4096)
    dropped = checked.uploads.cancel(
        checked.uploads.create(bytes=10, filename="x.jsonl", mime_type="text/jsonl", purpose="fine-tune").id
    )
    sdk_ok(done, dropped)
    assert done.file is not None
    deleted = checked.files.delete(done.file.id)
    sdk_ok(deleted)
    assert deleted.deleted

    # Errors, each in OpenAI's envelope, naming the real field.
    with pytest.raises(openai.NotFoundError):
        checked.files.retrieve("file-missing")
    not_json = raw.post(JOBS, content=b"model=x", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]["param"] is None, not_json.text
    assert "not valid JSON" in not_json.json()["error"]["message"]
    tokens = raw.post("/v1/completions", json={"model": tiny_model, "prompt": [1, 2, 3]})
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "prompt", tokens.text
    bad_job = raw.post(JOBS, json={"model": tiny_model, "training_file": f.id, "lora": {"r": "eight"}})
    assert bad_job.status_code == 400 and bad_job.json()["error"]["param"] == "lora.r", bad_job.text

    conformance.assert_clean()
    for op in ("createFile", "listFiles", "retrieveFile", "downloadFile", "deleteFile", "createUpload",
               "addUploadPart", "completeUpload", "cancelUpload"):  # fmt: skip
        assert (op, 200) in conformance.seen, op


def _job_views(sdk: OpenAI, job_id: str) -> list[Any]:
    """The job and its lists, each through the SDK (so each is checked twice: raw and typed)."""
    return [
        sdk.fine_tuning.jobs.retrieve(job_id),
        sdk.fine_tuning.jobs.list_events(job_id, limit=100),
        sdk.fine_tuning.jobs.checkpoints.list(job_id),
    ]


def test_jobs_in_every_state_models_chat_and_completions_conform(
    checked: OpenAI,
    checked_admin: OpenAI,
    raw: Any,
    conformance: Conformance,
    live_worker: subprocess.Popen[bytes],
    inference_worker: subprocess.Popen[bytes],
    tiny_model: str,
    tmp_path: Path,
) -> None:
    jobs = checked.fine_tuning.jobs
    f = upload(checked, tmp_path, shakespeare_rows(48))
    fine: dict[str, set[str]] = {}  # detailed_status -> status, as read

    def seen(job: Any) -> Any:
        extra = job.model_extra or {}
        fine.setdefault(extra["detailed_status"], set()).add(job.status)
        return job

    def wait(job_id: str, until: Any) -> Any:
        return seen(wait_sdk_job(checked, job_id, lambda j: until(seen(j))))

    long = jobs.create(
        model=tiny_model, training_file=f.id, seed=1, extra_body={"training": {"max_steps": 60, "batch_size": 8}}
    )
    wait(long.id, lambda j: j.status == "running" and (job_progress(j)[2] or 0) > 0)

    # Behind a running job (one worker): queued, then held, then cancelled.
    wandb: Any = [{"type": "wandb", "wandb": {"project": "conformance", "tags": ["t"]}}]
    held = seen(
        jobs.create(model=tiny_model, training_file=f.id, integrations=wandb, extra_body={"training": {"max_steps": 2}})
    )
    assert held.status == "queued" and held.integrations and held.integrations[0].wandb.project == "conformance"
    mlflow: Any = [{"type": "mlflow", "mlflow": {"experiment": "x"}}]  # not enabled on this server: a 400
    with pytest.raises(openai.BadRequestError):
        jobs.create(model=tiny_model, training_file=f.id, extra_body={"integrations": mlflow})
    assert seen(jobs.pause(held.id)).status == "paused"
    dropped = seen(jobs.create(model=tiny_model, training_file=f.id, extra_body={"training": {"max_steps": 2}}))
    assert seen(jobs.cancel(dropped.id)).status == "cancelled"
    sdk_ok(*_job_views(checked, held.id), *_job_views(checked, dropped.id), jobs.list(limit=5))

    # The other methods' job objects (their `method` and `hyperparameters`), queued, then cancelled.
    prefs = upload(checked, tmp_path, preference_rows(8), "prefs.jsonl")
    prompt_rows = [{"messages": [{"role": "user", "content": f"say {i}"}], "letter": "e"} for i in range(8)]
    prompts = upload(checked, tmp_path, prompt_rows, "prompts.jsonl")
    methods: list[tuple[str, Any]] = [
        (prefs.id, {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}}),
        (prompts.id, {"type": "reinforcement", "reinforcement": {"grader": STRING_CHECK}}),
    ]
    for training_file, method in methods:
        other = seen(jobs.create(model=tiny_model, training_file=training_file, method=method))
        assert other.method is not None and other.method.type == method["type"]
        sdk_ok(other, seen(jobs.cancel(other.id)))

    # The running job: a pause asked for reads `running` until the worker has checkpointed.
    asked = seen(jobs.pause(long.id))
    assert asked.status in ("running", "paused")
    paused = wait(long.id, lambda j: j.status in {"paused", *TERMINAL})
    assert paused.status == "paused", worker_log()
    sdk_ok(*_job_views(checked, long.id))
    seen(jobs.resume(long.id))
    wait(long.id, lambda j: j.status == "running")
    asked = seen(jobs.cancel(long.id))
    assert asked.status in ("running", "cancelled")
    cancelled = wait(long.id, lambda j: j.status in TERMINAL)
    assert cancelled.status == "cancelled", worker_log()
    sdk_ok(*_job_views(checked, long.id))

    # One trained to the end: events (metrics, samples), checkpoints with and without evaluations.
    short = jobs.create(
        model=tiny_model,
        training_file=f.id,
        suffix="conf",
        extra_body={"training": {"max_steps": 4, "batch_size": 4, "eval_every": 2, "save_every": 2}},
    )
    done = wait(short.id, lambda j: j.status in TERMINAL)
    assert done.status == "succeeded", (done.error, worker_log())
    views = _job_views(checked, short.id)
    sdk_ok(*views, *(checked.files.retrieve(r) for r in done.result_files))
    assert done.result_files and checked.files.content(done.result_files[0]).text.startswith("step,")
    events = views[1].data
    assert {e.type for e in events} <= {"message", "metrics"} and any(e.type == "metrics" for e in events)
    assert any(isinstance(e.data, dict) and e.data.get("kind") == "samples" for e in events)
    with pytest.raises(openai.ConflictError):
        jobs.cancel(short.id)
    with pytest.raises(openai.NotFoundError):
        jobs.retrieve("ftjob-missing")

    # Every stored status, held still, read through every job route; `failed` carries its error.
    org_id = org_id_of("acme")
    row = {"model": tiny_model, "spec": (done.model_extra or {})["spec"], "training_file": f.id}
    for status in JobStatus:
        error = {"code": "nan_loss", "message": "loss is NaN", "param": None} if status == "failed" else None
        # enqueued now: the reconciler leaves the queued one alone (no worker trains a row written here)
        job_id = insert_job(org_id, status.value, error=error, enqueued_at=utcnow(), **row)
        views = _job_views(checked, job_id)
        sdk_ok(*views)
        seen(views[0])
    # A list filtered on `running` holds the jobs being paused or cancelled too (they read `running`).
    for wanted in ("running", "cancel_requested", "paused", "failed"):
        page = raw.get(JOBS, params={"status": wanted, "limit": 20}).json()["data"]
        assert page and all(wanted in (j["status"], j["detailed_status"]) for j in page)
        if wanted == "running":
            assert {"running", "cancel_requested", "pause_requested"} <= {j["detailed_status"] for j in page}
    assert fine["cancel_requested"] == {"running"} and fine["pause_requested"] == {"running"}
    assert {s for values in fine.values() for s in values} <= {s.value for s in JobStatus} - {
        "cancel_requested",
        "pause_requested",
    }

    # Models, chat and completions (stream and not) with the trained model.
    assert done.fine_tuned_model
    sdk_ok(checked.models.list(), checked.models.retrieve(tiny_model), checked.models.retrieve(done.fine_tuned_model))
    with pytest.raises(openai.NotFoundError):
        checked.models.retrieve("no-such-model")
    messages: Any = [{"role": "user", "content": "hi"}]
    chat = checked.chat.completions.create(model=done.fine_tuned_model, messages=messages, max_tokens=3)
    assert chat.choices[0].message.refusal is None and isinstance(chat.system_fingerprint, str)
    chunks = list(
        checked.chat.completions.create(
            model=done.fine_tuned_model,
            messages=messages,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = checked.completions.create(model=done.fine_tuned_model, prompt="To be", max_tokens=3)
    sdk_ok(chat, *chunks, text)
    streamed = list(checked.completions.create(model=tiny_model, prompt="To be", max_tokens=2, stream=True))
    assert streamed and all(isinstance(c.system_fingerprint, str) for c in streamed)

    # Sharing a checkpoint with another organization, then deleting the fine-tuned model.
    ckpt = jobs.checkpoints.list(short.id).data[0].fine_tuned_model_checkpoint
    permissions = checked_admin.fine_tuning.checkpoints.permissions
    granted = permissions.create(ckpt, project_ids=[org_id_of("globex")])
    revoked = permissions.delete(granted.data[0].id, fine_tuned_model_checkpoint=ckpt)
    sdk_ok(granted, permissions.retrieve(ckpt), revoked)
    gone = checked.models.delete(done.fine_tuned_model)
    sdk_ok(gone)
    assert gone.deleted

    # The alpha graders.
    sdk_ok(
        checked.fine_tuning.alpha.graders.validate(grader=STRING_CHECK),
        checked.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="Hello", item={"letter": "e"}),
    )

    conformance.assert_clean()
    expected = {
        "createFineTuningJob", "listPaginatedFineTuningJobs", "retrieveFineTuningJob", "cancelFineTuningJob",
        "listFineTuningEvents", "listFineTuningJobCheckpoints", "pauseFineTuningJob", "resumeFineTuningJob",
        "listModels", "retrieveModel", "deleteModel", "createChatCompletion", "createCompletion", "runGrader",
        "validateGrader", "createFineTuningCheckpointPermission", "listFineTuningCheckpointPermissions",
        "deleteFineTuningCheckpointPermission",
    }  # fmt: skip
    assert expected <= {op for op, status in conformance.seen if status == 200}
    assert {("cancelFineTuningJob", 409), ("retrieveFineTuningJob", 404), ("retrieveModel", 404)} <= conformance.seen
    assert conformance.bodies > 100

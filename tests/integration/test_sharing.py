"""Issue 22 part B end to end: `tuneforge api`, a training worker and an inference worker on PostgreSQL
and Redis, through the official openai SDK. A tiny job trains here; its results CSV is read, one of its
checkpoints is shared with another organization, which chats with it and trains from it (the worker
resolves the shared adapter), then the share is revoked and the fine-tuned model deleted."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from openai.types.fine_tuning import FineTuningJob

from tests.helpers import make_key, org_id_of, shakespeare_rows, wait_sdk_job, worker_log

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Speak, friend."}]
SHAPE = {"lora": {"r": 4}}


def _upload(client: OpenAI, n: int) -> str:
    body = ("\n".join(json.dumps(r) for r in shakespeare_rows(n)) + "\n").encode()
    return client.files.create(file=("train.jsonl", body), purpose="fine-tune").id


@pytest.fixture(scope="module")
def trained(sdk: OpenAI, tiny_model: str, live_worker: subprocess.Popen[bytes]) -> FineTuningJob:
    """A succeeded job with checkpoints at steps 2 and 4, and an evaluation (a 25% validation split)."""
    job = sdk.fine_tuning.jobs.create(
        model=tiny_model,
        training_file=_upload(sdk, 16),
        suffix="shared",
        extra_body={**SHAPE, "training": {"max_steps": 4, "save_every": 2, "batch_size": 4, "eval_every": 2}},
    )
    job = wait_sdk_job(sdk, job.id)
    assert job.status == "succeeded", (job.error, worker_log())
    return job


@pytest.fixture(scope="module")
def orgs(live_api: str, other_key: str) -> Iterator[dict[str, OpenAI]]:
    """acme's admin, globex (the suite's other key) and initech, which nothing is shared with."""
    keys = {"acme_admin": make_key("acme", admin=True), "globex": other_key, "initech": make_key("initech")}
    clients = {name: OpenAI(base_url=f"{live_api}/v1", api_key=key, max_retries=0) for name, key in keys.items()}
    yield clients
    for c in clients.values():
        c.close()


def test_the_finished_job_lists_its_results_csv(sdk: OpenAI, trained: FineTuningJob, orgs: dict[str, OpenAI]) -> None:
    (file_id,) = trained.result_files
    meta = sdk.files.retrieve(file_id)
    assert meta.purpose == "fine-tune-results" and meta.filename == "step_metrics.csv"
    rows = list(csv.DictReader(io.StringIO(sdk.files.content(file_id).text)))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    trained_steps = [r for r in rows if r["train_loss"]]
    assert [int(r["step"]) for r in trained_steps] == [1, 2, 3, 4]
    assert all(float(r["train_loss"]) > 0 and 0 <= float(r["train_accuracy"]) <= 1 for r in trained_steps)
    evaluated = [r for r in rows if r["valid_loss"]]
    assert evaluated and all(0 <= float(r["valid_mean_token_accuracy"]) <= 1 for r in evaluated)
    with pytest.raises(openai.NotFoundError):
        orgs["globex"].files.content(file_id)


def test_a_shared_checkpoint_serves_and_seeds_its_grantee_only(
    sdk: OpenAI,
    tiny_model: str,
    trained: FineTuningJob,
    orgs: dict[str, OpenAI],
    inference_worker: subprocess.Popen[bytes],
) -> None:
    ckpt = next(
        c.fine_tuned_model_checkpoint
        for c in sdk.fine_tuning.jobs.checkpoints.list(trained.id)
        if c.fine_tuned_model_checkpoint.endswith(":ckpt-step-2")
    )
    globex, initech = orgs["globex"], orgs["initech"]
    with pytest.raises(openai.NotFoundError):  # before it is shared
        globex.chat.completions.create(model=ckpt, messages=PROMPT, max_tokens=2)

    shared = orgs["acme_admin"].fine_tuning.checkpoints.permissions.create(ckpt, project_ids=[org_id_of("globex")])
    (permission,) = shared.data
    reply = globex.chat.completions.create(model=ckpt, messages=PROMPT, max_tokens=3, temperature=0)
    assert reply.model == ckpt and reply.choices[0].message.content is not None
    for client, model in ((initech, ckpt), (globex, trained.fine_tuned_model)):  # not shared: as if missing
        with pytest.raises(openai.NotFoundError) as nf:
            client.chat.completions.create(model=model or "", messages=PROMPT, max_tokens=2)
        assert nf.value.code == "model_not_found"

    # globex trains from it: the API checks the grant at POST, the worker resolves the adapter again.
    job = globex.fine_tuning.jobs.create(
        model=tiny_model,
        training_file=_upload(globex, 8),
        extra_body={**SHAPE, "from_checkpoint": ckpt, "training": {"max_steps": 2, "batch_size": 4}},
    )
    assert job.organization_id == org_id_of("globex")
    job = wait_sdk_job(globex, job.id)
    assert job.status == "succeeded", (job.error, worker_log())
    events = [e.message for e in globex.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert f"Starting from the adapter of {ckpt}" in events
    with pytest.raises(openai.NotFoundError):
        initech.fine_tuning.jobs.create(
            model=tiny_model,
            training_file=_upload(initech, 8),
            extra_body={**SHAPE, "from_checkpoint": ckpt, "training": {"max_steps": 2}},
        )

    gone = orgs["acme_admin"].fine_tuning.checkpoints.permissions.delete(
        permission.id, fine_tuned_model_checkpoint=ckpt
    )
    assert gone.deleted
    with pytest.raises(openai.NotFoundError):
        globex.chat.completions.create(model=ckpt, messages=PROMPT, max_tokens=2)


def test_deleting_the_fine_tuned_model(
    sdk: OpenAI,
    live_api: str,
    trained: FineTuningJob,
    orgs: dict[str, OpenAI],
    inference_worker: subprocess.Popen[bytes],
) -> None:
    model: str = trained.fine_tuned_model  # type: ignore[assignment]  # set on every succeeded job
    assert sdk.chat.completions.create(model=model, messages=PROMPT, max_tokens=2).model == model
    with pytest.raises(openai.NotFoundError):
        orgs["globex"].models.delete(model)

    deleted = sdk.models.delete(model)
    assert deleted.deleted and deleted.id == model
    with pytest.raises(openai.NotFoundError) as nf:
        sdk.chat.completions.create(model=model, messages=PROMPT, max_tokens=2)
    assert nf.value.code == "model_not_found"
    r = httpx.get(
        f"{live_api}/v1/fine_tuning/jobs/{trained.id}/adapter", headers={"Authorization": f"Bearer {sdk.api_key}"}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_deleted"
    job = sdk.fine_tuning.jobs.retrieve(trained.id)
    assert job.status == "succeeded" and job.result_files == trained.result_files
    # Its checkpoints are models still, and the inference worker serves them.
    ckpt = sdk.fine_tuning.jobs.checkpoints.list(trained.id).data[0].fine_tuned_model_checkpoint
    assert sdk.chat.completions.create(model=ckpt, messages=PROMPT, max_tokens=2).model == ckpt

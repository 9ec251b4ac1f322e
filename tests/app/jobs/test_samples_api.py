"""Sample generations over real processes: a worker generates them at step 0, each evaluation and the
end; the API returns them by step, org-scoped; `samples` events announce them."""

from __future__ import annotations

import subprocess

import httpx
from openai import OpenAI

from tests.helpers import shakespeare_rows, upload_jsonl, wait_sdk_job


def test_samples_by_step_and_their_events(
    sdk: OpenAI,
    client: httpx.Client,
    live_api: str,
    other_key: str,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
) -> None:
    file_id = upload_jsonl(client, shakespeare_rows(32))["id"]
    body = {
        "model": tiny_model,
        "training_file": file_id,
        "training": {"max_steps": 4, "eval_every": 2, "batch_size": 8, "learning_rate": 1e-2},
        "samples": {"prompts": ["First Citizen:"], "from_validation": 1, "max_new_tokens": 5},
    }
    job = client.post("/v1/fine_tuning/jobs", json=body)
    assert job.status_code == 200, job.text
    job_id = job.json()["id"]
    done = wait_sdk_job(sdk, job_id)
    assert done.status == "succeeded", done.error

    samples = client.get(f"/v1/fine_tuning/jobs/{job_id}/samples").json()
    assert samples["object"] == "list"
    rows = samples["data"]
    assert [(r["step"], r["index"]) for r in rows] == [(s, i) for s in (0, 2, 4) for i in (0, 1)]
    assert all(r["object"] == "fine_tuning.job.sample" and 0 < r["tokens"] <= 5 for r in rows)
    assert {r["prompt"] for r in rows if r["index"] == 0} == {"First Citizen:"}
    later = client.get(f"/v1/fine_tuning/jobs/{job_id}/samples", params={"since_step": 2}).json()["data"]
    assert {r["step"] for r in later} == {4}

    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    announced = sorted(e["data"]["step"] for e in events if (e.get("data") or {}).get("kind") == "samples")
    assert announced == [0, 2, 4]
    assert all(e["data"]["count"] == 2 for e in events if (e.get("data") or {}).get("kind") == "samples")

    # Another organization's key sees no such job.
    other = httpx.get(
        f"{live_api}/v1/fine_tuning/jobs/{job_id}/samples", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert other.status_code == 404, other.text


def test_samples_on_a_classification_job_are_refused(client: httpx.Client, tiny_model: str) -> None:
    body = {"model": tiny_model, "training_file": "file-x", "task": "regression", "samples": {"max_new_tokens": 8}}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "samples" and "causal_lm only" in r.json()["error"]["message"]

"""Continued training (`from_checkpoint`): a new job starts from an earlier job's adapter or
checkpoint of the same organization and a compatible base; anything else is refused naming the field."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.worker.runner import execute

TRAINING = {"max_steps": 4, "batch_size": 8, "learning_rate": 1e-2, "save_every": 2}


def create(client: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/v1/fine_tuning/jobs", json=body, headers=headers)


def first_loss(client: httpx.Client, job_id: str) -> float:
    points = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    return float(next(p["loss"] for p in points if p["loss"] is not None))


def test_from_checkpoint_continues_from_the_adapter(client: httpx.Client, tiny_model: str, other_key: str) -> None:
    file_id = upload_jsonl(client, shakespeare_rows(40))["id"]
    base = {"model": tiny_model, "training_file": file_id, "seed": 4, "training": TRAINING}
    first = create(client, base).json()
    assert execute(first["id"], worker_id="w-cont") == "succeeded"
    done = client.get(f"/v1/fine_tuning/jobs/{first['id']}").json()
    ft = done["fine_tuned_model"]
    ckpts = client.get(f"/v1/fine_tuning/jobs/{first['id']}/checkpoints").json()["data"]
    step2 = next(c for c in ckpts if c["step_number"] == 2)

    # Every form of reference is accepted.
    for ref in (step2["id"], step2["fine_tuned_model_checkpoint"]):
        r = create(client, {**base, "from_checkpoint": ref})
        assert r.status_code == 200, r.text
        client.post(f"/v1/fine_tuning/jobs/{r.json()['id']}/cancel")

    r = create(client, {**base, "from_checkpoint": ft})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["spec"]["from_checkpoint"] == ft
    assert execute(second["id"], worker_id="w-cont") == "succeeded"
    events = [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{second['id']}/events?limit=100").json()["data"]]
    assert f"Starting from the adapter of {ft}" in events
    # Same data, same seed: the continued job starts where the first one ended, lower.
    assert first_loss(client, second["id"]) < first_loss(client, first["id"]) - 0.05

    # Refusals, each naming the field: another organization's (404, as if absent), unknown, incompatible.
    other = {"Authorization": f"Bearer {other_key}"}
    other_file = upload_jsonl(client, shakespeare_rows(8), headers=other)["id"]
    r = create(client, {**base, "training_file": other_file, "from_checkpoint": ft}, headers=other)
    assert (r.status_code, r.json()["error"]["param"]) == (404, "from_checkpoint")
    for ref in (ft + "x", step2["id"] + "0", f"{ft}:ckpt-step-3", "nonsense"):
        r = create(client, {**base, "from_checkpoint": ref})
        assert r.status_code in (400, 404), r.text
        assert r.json()["error"]["param"] == "from_checkpoint"
    r = create(client, {**base, "lora": {"r": 4}, "from_checkpoint": ft})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "from_checkpoint")
    assert "lora.r" in r.json()["error"]["message"]

"""Operator limits: spec caps (400 naming the field) and per-organization fairness (429 with
Retry-After for the queue; a running-jobs cap that leaves extra jobs queued at claim time)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from tests.helpers import make_key, shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings


@pytest.fixture
def tenant(client: httpx.Client, request: pytest.FixtureRequest) -> tuple[dict[str, str], str]:
    """A fresh organization (so counts start at zero) with one uploaded file."""
    headers = {"Authorization": f"Bearer {make_key(f'limits-{request.node.name}')}"}
    return headers, upload_jsonl(client, shakespeare_rows(8), headers=headers)["id"]


@pytest.mark.parametrize(
    ("setting", "cap", "body", "param"),
    [
        ("max_steps", 50, {"training": {"max_steps": 51}}, "training.max_steps"),
        ("max_epochs", 2, {"training": {"epochs": 3}}, "training.epochs"),
        (
            "max_epochs",
            2,
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5}}}},
            "training.epochs",
        ),
        ("max_seq_length", 256, {"training": {"max_seq_length": 512, "max_steps": 1}}, "training.max_seq_length"),
        ("max_batch_size", 8, {"training": {"batch_size": 16, "max_steps": 1}}, "training.batch_size"),
        ("max_lora_r", 8, {"lora": {"r": 16}, "training": {"max_steps": 1}}, "lora.r"),
    ],
)
def test_spec_caps_are_configurable_and_name_the_field(
    client: httpx.Client,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: str,
    setting: str,
    cap: int,
    body: dict[str, Any],
    param: str,
) -> None:
    file_id = upload_jsonl(client, shakespeare_rows(8))["id"]
    monkeypatch.setattr(settings, setting, cap)
    r = client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == (param, "over_limit")
    assert f"limit of {cap}" in err["message"] and f"TUNEFORGE_{setting.upper()}" in err["message"]
    monkeypatch.undo()  # the same request is fine under the default caps
    assert (
        client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id, **body}).status_code
        == 200
    )


def test_queued_jobs_over_the_org_limit_get_429_with_retry_after(
    client: httpx.Client,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: str,
    tenant: tuple[dict[str, str], str],
) -> None:
    headers, file_id = tenant
    monkeypatch.setattr(settings, "max_queued_jobs_per_org", 2)
    body = {"model": tiny_model, "training_file": file_id, "training": {"max_steps": 1}}
    first = client.post("/v1/fine_tuning/jobs", headers={**headers, "Idempotency-Key": "k1"}, json=body)
    assert first.status_code == 200
    assert client.post("/v1/fine_tuning/jobs", headers=headers, json=body).status_code == 200
    over = client.post("/v1/fine_tuning/jobs", headers=headers, json=body)
    assert over.status_code == 429
    assert over.headers["retry-after"] == "30"
    err = over.json()["error"]
    assert (err["type"], err["code"]) == ("rate_limit_error", "queued_jobs_limit")
    assert "2 queued jobs" in err["message"]
    # A retried POST of a job that already exists is not a new job, so it is not refused.
    replay = client.post("/v1/fine_tuning/jobs", headers={**headers, "Idempotency-Key": "k1"}, json=body)
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    # Another organization is not affected, and cancelling frees room.
    neighbour = {"Authorization": f"Bearer {make_key('limits-neighbour')}"}
    their_file = upload_jsonl(client, shakespeare_rows(8), headers=neighbour)["id"]
    r = client.post("/v1/fine_tuning/jobs", headers=neighbour, json={**body, "training_file": their_file})
    assert r.status_code == 200
    assert client.post(f"/v1/fine_tuning/jobs/{first.json()['id']}/cancel", headers=headers).status_code == 200
    assert client.post("/v1/fine_tuning/jobs", headers=headers, json=body).status_code == 200


def test_running_cap_leaves_extra_jobs_queued_and_frees_the_worker(
    client: httpx.Client,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: str,
    tenant: tuple[dict[str, str], str],
) -> None:
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.jobs import lifecycle, repository
    from tuneforge.app.jobs.lifecycle import WAITING
    from tuneforge.worker.runner import execute

    headers, file_id = tenant
    monkeypatch.setattr(settings, "max_running_jobs_per_org", 1)
    body = {"model": tiny_model, "training_file": file_id, "training": {"max_steps": 1}}
    first, second = (client.post("/v1/fine_tuning/jobs", headers=headers, json=body).json()["id"] for _ in range(2))
    with session_scope() as s:
        assert lifecycle.claim(s, first, "w1", lease_seconds=60, max_running_per_org=settings.max_running_jobs_per_org)

    # The worker that receives the second job leaves it queued, un-sent, with one event saying why.
    assert execute(second, "w2") == "deferred"
    assert execute(second, "w2") == "deferred"
    job = client.get(f"/v1/fine_tuning/jobs/{second}", headers=headers).json()
    assert job["status"] == "queued"
    events = client.get(f"/v1/fine_tuning/jobs/{second}/events", headers=headers).json()["data"]
    assert [e["message"].startswith(WAITING) for e in events].count(True) == 1
    with session_scope() as s:  # the reconciler will send it again
        assert second in repository.stale_queued(s, older_than=dt.datetime.now(dt.UTC))

    # When the first finishes, the second can be claimed.
    with session_scope() as s:
        assert lifecycle.request_cancel(s, first) and lifecycle.complete_cancel(s, first, "w1")
        assert lifecycle.claim(s, second, "w2", lease_seconds=60, max_running_per_org=settings.max_running_jobs_per_org)
        assert lifecycle.request_cancel(s, second) and lifecycle.complete_cancel(s, second, "w2")

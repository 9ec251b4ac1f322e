"""What a sweep's end sends: its trials' `fine_tuning.job.cancelled` when it is cancelled, and
`fine_tuning.sweep.completed` however it ends (docs/webhooks.md). Read from the outbox; no receiver."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.helpers import insert_job, make_key, org_id_of, outbox, shakespeare_rows, subscribe_all, upload_jsonl
from tuneforge.app.core.config import Settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Job
from tuneforge.app.sweeps.driver import advance

SWEEPS = "/v1/fine_tuning/sweeps"


class Org:
    def __init__(self) -> None:
        name = f"sweep-hooks-{uuid.uuid4().hex[:8]}"
        self.headers = {"Authorization": f"Bearer {make_key(name)}"}
        self.id = org_id_of(name)
        self.hook = subscribe_all(self.id)


def start_sweep(client: httpx.Client, org: Org, model: str, rates: list[float]) -> tuple[str, list[str]]:
    """A grid sweep over the learning rate, every trial started at once (queued). Returns
    (sweep id, trial job ids)."""
    file_id = upload_jsonl(client, shakespeare_rows(20), headers=org.headers)["id"]
    body: dict[str, Any] = {
        "model": model,
        "training_file": file_id,
        "training": {"max_steps": 2},
        "search_space": {"training.learning_rate": {"values": rates}},
        "strategy": "grid",
        "max_parallel": len(rates),
    }
    r = client.post(SWEEPS, json=body, headers=org.headers)
    assert r.status_code == 200, r.text
    sweep_id = r.json()["id"]
    trials = client.get(f"{SWEEPS}/{sweep_id}/trials", headers=org.headers).json()["data"]
    assert len(trials) == len(rates)
    return sweep_id, [t["job_id"] for t in trials]


def test_cancelling_a_sweep_cancels_its_queued_trials_with_their_webhooks(
    client: httpx.Client, tiny_model: str
) -> None:
    org = Org()
    sweep_id, jobs = start_sweep(client, org, tiny_model, [1e-3, 1e-2])
    assert outbox(org.hook) == []  # queued trials send nothing
    r = client.post(f"{SWEEPS}/{sweep_id}/cancel", headers=org.headers)
    assert r.status_code == 200, r.text
    expected = [("fine_tuning.job.cancelled", j) for j in jobs] + [("fine_tuning.sweep.completed", sweep_id)]
    assert sorted(outbox(org.hook)) == sorted(expected)


def test_cancelling_a_sweep_asks_its_running_trials_to_stop(client: httpx.Client, tiny_model: str) -> None:
    org = Org()
    sweep_id, jobs = start_sweep(client, org, tiny_model, [1e-3])
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == jobs[0]).values(status="running", worker_id="w"))
    assert client.post(f"{SWEEPS}/{sweep_id}/cancel", headers=org.headers).status_code == 200
    job = client.get(f"/v1/fine_tuning/jobs/{jobs[0]}", headers=org.headers).json()
    assert (job["status"], job["detailed_status"]) == ("running", "cancel_requested")
    # The trial's own webhook comes when its worker stops; the sweep is finished now.
    assert outbox(org.hook) == [("fine_tuning.sweep.completed", sweep_id)]


@pytest.mark.parametrize(
    ("trial", "sweep_status"),
    [
        ({"status": "succeeded", "final_metrics": {"validation": {"eval_loss": 1.5}}}, "succeeded"),
        ({"status": "failed", "error": {"code": "internal", "message": "boom", "param": None}}, "failed"),
    ],
)
def test_a_sweep_whose_trials_ended_completes_with_its_webhook(
    client: httpx.Client,
    tiny_model: str,
    settings: Settings,
    trial: dict[str, Any],
    sweep_status: str,
) -> None:
    org = Org()
    sweep_id, jobs = start_sweep(client, org, tiny_model, [1e-3])
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == jobs[0]).values(**trial))
    with session_scope() as s:
        advance(s, settings, sweep_id, lambda _: None)
    sweep = client.get(f"{SWEEPS}/{sweep_id}", headers=org.headers).json()
    assert sweep["status"] == sweep_status
    assert outbox(org.hook) == [("fine_tuning.sweep.completed", sweep_id)]
    with session_scope() as s:  # finishing is once: another round sends nothing more
        advance(s, settings, sweep_id, lambda _: None)
    assert outbox(org.hook) == [("fine_tuning.sweep.completed", sweep_id)]


def test_the_sweep_completed_event_is_only_the_sweep_organizations(client: httpx.Client, tiny_model: str) -> None:
    org, other = Org(), Org()
    insert_job(other.id, "queued")  # the other organization has jobs of its own
    sweep_id, _ = start_sweep(client, org, tiny_model, [1e-3])
    assert client.post(f"{SWEEPS}/{sweep_id}/cancel", headers=org.headers).status_code == 200
    assert ("fine_tuning.sweep.completed", sweep_id) in outbox(org.hook)
    assert outbox(other.hook) == []

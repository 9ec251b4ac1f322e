from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import update

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Job
from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs.reconciler import reconcile_once


def make_job(client: httpx.Client, model: str) -> str:
    file_id = upload_jsonl(client, shakespeare_rows(5))["id"]
    return client.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id}).json()["id"]


def set_job(job_id: str, **values: object) -> None:
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return client.get(f"/v1/fine_tuning/jobs/{job_id}").json()


def test_lost_message_is_resent(client: httpx.Client, tiny_model: str, settings: Settings) -> None:
    job_id = make_job(client, tiny_model)
    set_job(job_id, enqueued_at=None)  # as if the broker never got it
    sent: list[str] = []
    with session_scope() as s:
        reconcile_once(s, settings, sent.append)
    assert job_id in sent
    sent.clear()
    with session_scope() as s:  # now recently enqueued: not sent again
        reconcile_once(s, settings, sent.append)
    assert job_id not in sent


def test_expired_lease_is_requeued_then_fails_worker_lost(
    client: httpx.Client, tiny_model: str, settings: Settings
) -> None:
    job_id = make_job(client, tiny_model)
    past = utcnow() - dt.timedelta(minutes=5)
    set_job(job_id, status="running", worker_id="dead-worker", lease_expires_at=past)
    with session_scope() as s:
        reconcile_once(s, settings, lambda _: None)
    job = get_job(client, job_id)
    assert (job["status"], job["attempt"]) == ("queued", 2)
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
    assert events[0]["message"] == "Worker lost; re-queued as attempt 2"

    set_job(job_id, status="running", worker_id="dead-again", lease_expires_at=past, attempt=settings.max_attempts)
    with session_scope() as s:
        reconcile_once(s, settings, lambda _: None)
    job = get_job(client, job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "worker_lost"


def test_expired_cancel_request_is_cancelled(client: httpx.Client, tiny_model: str, settings: Settings) -> None:
    job_id = make_job(client, tiny_model)
    set_job(job_id, status="cancel_requested", worker_id="dead", lease_expires_at=utcnow() - dt.timedelta(minutes=1))
    with session_scope() as s:
        reconcile_once(s, settings, lambda _: None)
    assert get_job(client, job_id)["status"] == "cancelled"


def test_live_lease_is_left_alone(client: httpx.Client, tiny_model: str, settings: Settings) -> None:
    job_id = make_job(client, tiny_model)
    set_job(job_id, status="running", worker_id="alive", lease_expires_at=utcnow() + dt.timedelta(minutes=1))
    with session_scope() as s:
        reconcile_once(s, settings, lambda _: None)
    job = get_job(client, job_id)
    assert (job["status"], job["attempt"]) == ("running", 1)

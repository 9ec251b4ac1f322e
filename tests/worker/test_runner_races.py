"""The runner's records when a user's request raced the worker's stop: each ends where the job's
life cycle says, with the webhook that end sends (tuneforge/app/jobs/lifecycle.py)."""

from __future__ import annotations

import datetime as dt

from tests.helpers import insert_job, org_id_of, outbox, subscribe_all
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs import repository
from tuneforge.contract.status import JobStatus, RunOutcome
from tuneforge.worker import runner


def owned(org_id: str, status: str, worker_id: str) -> str:
    return insert_job(org_id, status, worker_id=worker_id, lease_expires_at=utcnow() + dt.timedelta(minutes=1), step=3)


def test_a_pause_that_raced_a_cancel_is_cancelled_with_its_webhook() -> None:
    org_id = org_id_of("runner-pause-cancel-race")
    hook = subscribe_all(org_id)
    job_id = owned(org_id, "cancel_requested", "w-race")
    # The loop checkpointed for a pause, but the user cancelled before the worker recorded it.
    assert runner._record_pause(job_id, "w-race", {"step": 3}) == RunOutcome.CANCELLED
    with session_scope() as s:
        job = repository.get(s, None, job_id)
        assert job is not None and job.status == JobStatus.CANCELLED
        assert repository.last_event_message(s, job_id) == "Job cancelled; its checkpoints are kept"
    assert outbox(hook) == [("fine_tuning.job.cancelled", job_id)]


def test_a_shutdown_that_raced_a_cancel_is_cancelled_with_its_webhook() -> None:
    org_id = org_id_of("runner-shutdown-cancel-race")
    hook = subscribe_all(org_id)
    job_id = owned(org_id, "cancel_requested", "w-race")
    assert runner._hand_back(job_id, "w-race") == RunOutcome.CANCELLED
    assert outbox(hook) == [("fine_tuning.job.cancelled", job_id)]


def test_a_shutdown_while_pausing_leaves_the_job_paused_not_cancelled() -> None:
    org_id = org_id_of("runner-shutdown-pause-race")
    hook = subscribe_all(org_id)
    job_id = owned(org_id, "pause_requested", "w-race")
    # The checkpoint was saved on the shutdown; the user only asked for a pause.
    assert runner._hand_back(job_id, "w-race") == RunOutcome.PAUSED
    with session_scope() as s:
        job = repository.get(s, None, job_id)
        assert job is not None and (job.status, job.worker_id) == (JobStatus.PAUSED, None)
    assert outbox(hook) == []

"""`allowed_actions` (tuneforge/contract/status.py) agrees with what the API does, in every status: an
allowed action moves the job, any other is refused (409) or changes nothing; and the job object lists
the allowed ones (`allowed_actions`, which the dashboard's buttons follow)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Job
from tuneforge.app.db.types import utcnow
from tuneforge.contract.status import TERMINAL, JobAction, JobStatus, allowed_actions


def test_a_finished_job_allows_nothing_and_every_action_is_allowed_somewhere() -> None:
    assert all(allowed_actions(status) == () for status in TERMINAL)
    for status in JobStatus:
        actions = allowed_actions(status)
        assert len(set(actions)) == len(actions) and all(isinstance(a, JobAction) for a in actions)
    assert {a for status in JobStatus for a in allowed_actions(status)} == set(JobAction)


def _set(job_ids: list[str], **values: object) -> None:
    with session_scope() as s:
        s.execute(update(Job).where(Job.id.in_(job_ids)).values(**values))


@pytest.fixture
def made() -> Iterator[list[str]]:
    """The jobs a test made, finished afterwards: left training, they would count against the
    organization's running cap and defer the jobs of the tests after this one."""
    job_ids: list[str] = []
    yield job_ids
    _set(job_ids, status=JobStatus.CANCELLED, finished_at=utcnow())


def _job_in(client: httpx.Client, model: str, file_id: str, status: JobStatus, made: list[str]) -> str:
    r = client.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id})
    assert r.status_code == 200, r.text
    job_id = str(r.json()["id"])
    made.append(job_id)
    _set([job_id], status=status)  # straight to the status under test, as a worker or a user would put it
    return job_id


@pytest.mark.parametrize("status", list(JobStatus))
def test_the_api_does_what_allowed_actions_says(
    client: httpx.Client, tiny_model: str, status: JobStatus, made: list[str]
) -> None:
    file_id = upload_jsonl(client, shakespeare_rows(8))["id"]
    allowed = allowed_actions(status)
    for action in JobAction:
        job_id = _job_in(client, tiny_model, file_id, status, made)
        shown = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        assert shown["allowed_actions"] == [a.value for a in allowed], shown

        r = client.post(f"/v1/fine_tuning/jobs/{job_id}/{action}")
        if action in allowed:
            assert r.status_code == 200, (status, action, r.text)
            # `status` is OpenAI's set (a cancel requested reads running): the stored one is detailed_status.
            after = JobStatus(r.json()["detailed_status"])
            assert after != status, f"{action} on a {status} job changed nothing"
            assert r.json()["allowed_actions"] == [a.value for a in allowed_actions(after)]
        else:
            refused = r.status_code == 409
            no_op = r.status_code == 200 and r.json()["detailed_status"] == status
            assert refused or no_op, (status, action, r.status_code, r.text)

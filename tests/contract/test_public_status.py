"""`status` as the API shows it stays in OpenAI's set; the finer stored status is `detailed_status`."""

from __future__ import annotations

from tuneforge.contract.status import PUBLIC_STATUSES, TRAINING, JobStatus, public_status, statuses_shown_as

# OpenAI's FineTuningJob.status enum (OpenAPI 2.3.0), plus `paused`, which its pause returns.
OPENAI = {"validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"}


def test_every_stored_status_shows_as_one_openai_knows() -> None:
    assert {public_status(s).value for s in JobStatus} == OPENAI == {s.value for s in PUBLIC_STATUSES}
    assert public_status(JobStatus.CANCEL_REQUESTED) == public_status(JobStatus.PAUSE_REQUESTED) == "running"
    assert all(public_status(s) == s for s in JobStatus if s not in TRAINING)


def test_a_list_filter_matches_what_reads_as_that_status() -> None:
    assert set(statuses_shown_as(JobStatus.RUNNING)) == set(TRAINING)
    assert statuses_shown_as(JobStatus.CANCEL_REQUESTED) == (JobStatus.CANCEL_REQUESTED,)
    assert statuses_shown_as(JobStatus.PAUSED) == (JobStatus.PAUSED,)

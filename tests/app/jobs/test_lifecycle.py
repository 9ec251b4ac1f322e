"""The job life cycle's table, walked against the real migrated database: every transition applies
from each of its sources with exactly its event(s) and webhook; from every other status it is refused
and writes nothing (tuneforge/contract/status.py `TRANSITIONS`, tuneforge/app/jobs/lifecycle.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from tests.helpers import insert_job, org_id_of, outbox, subscribe_all
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Job, JobEvent
from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs import lifecycle
from tuneforge.app.webhooks.events import JOB_STATUS_EVENTS, WebhookEvent
from tuneforge.contract.status import (
    ACTION_TRANSITIONS,
    TERMINAL,
    TRANSITIONS,
    JobAction,
    JobStatus,
    StopReason,
    Transition,
    allowed_actions,
)

T = Transition
WORKER = "w-lifecycle"
MODEL = "ft:tiny:org::lifecycle"
ERROR = {"code": "internal", "message": "boom", "param": None}

# One call per transition, as its caller makes it: (session, job id, worker id) -> applied.
Call = Callable[[Session, str, str], bool]
CALLS: dict[Transition, Call] = {
    T.CLAIM: lambda s, j, w: lifecycle.claim(s, j, w, lease_seconds=60, max_running_per_org=10_000),
    T.DEFER: lambda s, j, w: lifecycle.defer(s, j, cap=2),
    T.SUCCEED: lambda s, j, w: lifecycle.succeed(s, j, w, fine_tuned_model=MODEL, trained_tokens=7, error=None),
    T.FAIL: lambda s, j, w: lifecycle.fail(s, j, w, error=ERROR),
    T.CANCEL: lambda s, j, w: lifecycle.cancel(s, j),
    T.REQUEST_CANCEL: lambda s, j, w: lifecycle.request_cancel(s, j),
    T.PRUNE: lambda s, j, w: lifecycle.prune(s, j, message="Pruned by the test's sweep", data={"step": 2}),
    T.COMPLETE_CANCEL: lambda s, j, w: lifecycle.complete_cancel(s, j, w),
    T.HOLD: lambda s, j, w: lifecycle.hold(s, j),
    T.REQUEST_PAUSE: lambda s, j, w: lifecycle.request_pause(s, j),
    T.WITHDRAW_PAUSE: lambda s, j, w: lifecycle.withdraw_pause(s, j),
    T.COMPLETE_PAUSE: lambda s, j, w: lifecycle.complete_pause(s, j, w, step=4),
    T.RESUME: lambda s, j, w: lifecycle.resume(s, j),
    T.HAND_BACK: lambda s, j, w: lifecycle.hand_back(s, j, w, why=StopReason.SHUTDOWN),
    T.REQUEUE_EXPIRED: lambda s, j, w: lifecycle.requeue_expired(s, j, w, max_attempts=3),
    T.FAIL_EXPIRED: lambda s, j, w: lifecycle.fail_expired(s, j, w, max_attempts=1),
    T.CANCEL_EXPIRED: lambda s, j, w: lifecycle.cancel_expired(s, j, w),
    T.PAUSE_EXPIRED: lambda s, j, w: lifecycle.pause_expired(s, j, w),
}

# The job events each transition writes, oldest first.
EVENTS: dict[Transition, list[str]] = {
    T.CLAIM: [f"Worker {WORKER} started attempt 1"],
    T.DEFER: ["Waiting for a training slot: your organization has 2 jobs running (TUNEFORGE_MAX_RUNNING_JOBS_PER_ORG)"],
    T.SUCCEED: [f"New fine-tuned model created: {MODEL}", "The job has successfully completed"],
    T.FAIL: ["Job failed: boom"],
    T.CANCEL: ["Job cancelled before it started"],
    T.REQUEST_CANCEL: ["Cancellation requested; the worker stops within seconds"],
    T.PRUNE: ["Pruned by the test's sweep"],
    T.COMPLETE_CANCEL: ["Job cancelled; its checkpoints are kept"],
    T.HOLD: ["Job paused before it started; resume queues it"],
    T.REQUEST_PAUSE: ["Pause requested; the worker saves a checkpoint and stops within seconds"],
    T.WITHDRAW_PAUSE: ["Pause withdrawn; the job keeps training"],
    T.COMPLETE_PAUSE: ["Job paused at step 4; checkpoint saved"],
    T.RESUME: ["Job resumed; queued to continue from its last checkpoint"],
    T.HAND_BACK: ["Worker shutting down; checkpoint saved and job re-queued"],
    T.REQUEUE_EXPIRED: ["Worker lost; re-queued as attempt 2"],
    T.FAIL_EXPIRED: ["The worker stopped answering and all 1 attempts are used up."],
    T.CANCEL_EXPIRED: ["Job cancelled (its worker stopped answering)"],
    T.PAUSE_EXPIRED: ["Job paused (its worker stopped answering); resume continues from the last checkpoint"],
}

# Transitions only the owning worker applies, and those only the reconciler applies (an expired lease).
OWNED = (T.SUCCEED, T.FAIL, T.COMPLETE_CANCEL, T.COMPLETE_PAUSE, T.HAND_BACK)
EXPIRED = (T.REQUEUE_EXPIRED, T.FAIL_EXPIRED, T.CANCEL_EXPIRED, T.PAUSE_EXPIRED)

APPLIES = [(t, source) for t, rule in TRANSITIONS.items() for source in rule.sources]
REFUSED = [(t, status) for t, rule in TRANSITIONS.items() for status in JobStatus if status not in rule.sources]


@pytest.fixture(scope="module")
def org() -> tuple[str, str]:
    """(organization id, its webhook endpoint subscribed to every event)."""
    org_id = org_id_of("lifecycle-table")
    return org_id, subscribe_all(org_id)


def a_job(org_id: str, status: JobStatus, *, lease: dt.timedelta = dt.timedelta(minutes=-1)) -> str:
    """A job in `status`, held by WORKER, whose lease expired a minute ago (unless `lease` says
    otherwise): every guard but the status passes, so the status alone decides."""
    return insert_job(org_id, status, worker_id=WORKER, lease_expires_at=utcnow() + lease, step=4)


def row(job_id: str) -> dict[str, Any]:
    with session_scope() as s:
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        return {attr.key: getattr(job, attr.key) for attr in inspect(Job).column_attrs}


def events(job_id: str) -> list[str]:
    with session_scope() as s:
        return list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


def webhooks_of(hook: str, job_id: str) -> list[str]:
    return [event for event, about in outbox(hook) if about == job_id]


def apply(transition: Transition, job_id: str, worker_id: str = WORKER) -> bool:
    with session_scope() as s:
        return CALLS[transition](s, job_id, worker_id)


def test_every_transition_has_a_call_and_its_events() -> None:
    assert set(CALLS) == set(Transition) == set(EVENTS) == set(TRANSITIONS)


def test_the_table_never_leaves_a_terminal_state_and_names_real_webhooks() -> None:
    for transition, rule in TRANSITIONS.items():
        assert rule.sources and not set(rule.sources) & set(TERMINAL), transition
        # A webhook is the job's event for the status it ends in (docs/webhooks.md).
        assert rule.webhook is None or WebhookEvent(rule.webhook) == JOB_STATUS_EVENTS[rule.target], transition
    # Every end of a job sends its webhook, whoever ends it.
    assert all(rule.webhook for rule in TRANSITIONS.values() if rule.target in TERMINAL)


@pytest.mark.parametrize(("transition", "source"), APPLIES, ids=[f"{t}-from-{s}" for t, s in APPLIES])
def test_a_transition_applies_from_each_source_with_its_event_and_webhook(
    org: tuple[str, str], transition: Transition, source: JobStatus
) -> None:
    org_id, hook = org
    rule = TRANSITIONS[transition]
    job_id = a_job(org_id, source)
    assert apply(transition, job_id)
    assert row(job_id)["status"] == rule.target
    assert events(job_id) == EVENTS[transition]
    assert webhooks_of(hook, job_id) == ([rule.webhook] if rule.webhook else [])
    # Once: applied again it is refused (or, queued -> queued, changes nothing the user sees).
    again = apply(transition, job_id)
    assert again == (rule.target in rule.sources)
    assert events(job_id) == EVENTS[transition]
    assert webhooks_of(hook, job_id) == ([rule.webhook] if rule.webhook else [])


@pytest.mark.parametrize(("transition", "status"), REFUSED, ids=[f"{t}-from-{s}" for t, s in REFUSED])
def test_a_transition_from_any_other_status_is_refused_and_writes_nothing(
    org: tuple[str, str], transition: Transition, status: JobStatus
) -> None:
    org_id, hook = org
    job_id = a_job(org_id, status)
    before = row(job_id)
    assert not apply(transition, job_id)
    assert row(job_id) == before
    assert events(job_id) == []
    assert webhooks_of(hook, job_id) == []


@pytest.mark.parametrize("transition", [*OWNED, *EXPIRED])
def test_a_workers_transition_needs_the_worker_that_holds_the_job(org: tuple[str, str], transition: Transition) -> None:
    org_id, hook = org
    job_id = a_job(org_id, TRANSITIONS[transition].sources[0])
    before = row(job_id)
    assert not apply(transition, job_id, worker_id="w-another")
    assert (row(job_id), events(job_id), webhooks_of(hook, job_id)) == (before, [], [])


@pytest.mark.parametrize("transition", EXPIRED)
def test_the_reconcilers_transitions_need_an_expired_lease(org: tuple[str, str], transition: Transition) -> None:
    org_id, hook = org
    job_id = a_job(org_id, TRANSITIONS[transition].sources[0], lease=dt.timedelta(minutes=1))
    before = row(job_id)
    assert not apply(transition, job_id)
    assert (row(job_id), events(job_id), webhooks_of(hook, job_id)) == (before, [], [])


def test_requeue_and_worker_lost_split_on_the_attempts_left(org: tuple[str, str]) -> None:
    org_id, _ = org
    last_attempt = a_job(org_id, JobStatus.RUNNING)
    with session_scope() as s:
        assert not lifecycle.requeue_expired(s, last_attempt, WORKER, max_attempts=1)
        assert lifecycle.fail_expired(s, last_attempt, WORKER, max_attempts=1)
    attempts_left = a_job(org_id, JobStatus.RUNNING)
    with session_scope() as s:
        assert not lifecycle.fail_expired(s, attempts_left, WORKER, max_attempts=2)
        assert lifecycle.requeue_expired(s, attempts_left, WORKER, max_attempts=2)
    assert row(last_attempt)["error"]["code"] == "worker_lost"
    assert (row(attempts_left)["attempt"], row(attempts_left)["worker_id"]) == (2, None)


def test_a_claim_waits_for_the_organizations_running_cap(org: tuple[str, str]) -> None:
    org_id = org_id_of("lifecycle-cap")
    a_job(org_id, JobStatus.RUNNING)
    job_id = a_job(org_id, JobStatus.QUEUED)
    with session_scope() as s:
        assert not lifecycle.claim(s, job_id, WORKER, lease_seconds=60, max_running_per_org=1)
    with session_scope() as s:
        assert lifecycle.claim(s, job_id, WORKER, lease_seconds=60, max_running_per_org=2)


def test_a_pruned_trial_ends_cancelled_with_its_reason(org: tuple[str, str]) -> None:
    org_id, hook = org
    job_id = a_job(org_id, JobStatus.RUNNING)
    assert apply(T.PRUNE, job_id) and apply(T.COMPLETE_CANCEL, job_id)
    assert (row(job_id)["status"], row(job_id)["stop_reason"]) == (JobStatus.CANCELLED, "pruned")
    assert events(job_id)[-1] == "Trial pruned by its sweep; its checkpoints are kept"
    assert webhooks_of(hook, job_id) == ["fine_tuning.job.cancelled"]


# What the dashboard offers in each status, read from the table (the API's answers to each action in
# each status are checked in test_allowed_actions).
OFFERED = {
    JobStatus.VALIDATING_FILES: [JobAction.CANCEL, JobAction.PAUSE],
    JobStatus.QUEUED: [JobAction.CANCEL, JobAction.PAUSE],
    JobStatus.RUNNING: [JobAction.CANCEL, JobAction.PAUSE],
    JobStatus.CANCEL_REQUESTED: [],
    JobStatus.PAUSE_REQUESTED: [JobAction.CANCEL, JobAction.RESUME],
    JobStatus.PAUSED: [JobAction.CANCEL, JobAction.RESUME],
    JobStatus.SUCCEEDED: [],
    JobStatus.FAILED: [],
    JobStatus.CANCELLED: [],
}


@pytest.mark.parametrize("status", list(JobStatus))
def test_allowed_actions_are_those_with_a_transition_from_the_status(status: JobStatus) -> None:
    assert list(allowed_actions(status)) == OFFERED[status]
    for action, moves in ACTION_TRANSITIONS.items():
        assert (action in OFFERED[status]) == any(status in TRANSITIONS[t].sources for t in moves)

"""One vocabulary for where a job is and how a run ended."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Literal


class JobStatus(StrEnum):
    """A job's status as stored, and as the API's `detailed_status` shows it: OpenAI's names, plus
    `cancel_requested` and `pause_requested`, which `status` shows as `running` (`public_status`)."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    # Still training: the worker stops at the next step boundary and then records `cancelled`.
    CANCEL_REQUESTED = "cancel_requested"
    # Still training: the worker checkpoints at the next step boundary and then records `paused`.
    PAUSE_REQUESTED = "pause_requested"
    # Holds its checkpoints and no worker; `resume` queues it again. Never sent by the reconciler.
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Jobs that hold a worker (a lease); cancel_requested and pause_requested are still training until
# the worker stops.
# (Tuples, not sets: SQL `IN (...)` takes them as they are, and the order is stable in docs and logs.)
TRAINING: tuple[JobStatus, ...] = (JobStatus.RUNNING, JobStatus.CANCEL_REQUESTED, JobStatus.PAUSE_REQUESTED)
# Jobs that are not finished: they may still use their files (a paused job resumes on them).
LIVE: tuple[JobStatus, ...] = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, *TRAINING, JobStatus.PAUSED)
# Terminal states are final: every transition out of LIVE is a conditional update.
TERMINAL: tuple[JobStatus, ...] = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
# Waiting for a worker: counted against the per-organization queue limit.
WAITING: tuple[JobStatus, ...] = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED)


def public_status(status: JobStatus) -> JobStatus:
    """A job's `status` as the API shows it. It stays in the set OpenAI's clients know (its OpenAPI
    document's enum, plus `paused`, which OpenAI's pause returns): a training job whose cancel or pause
    was asked for is still `running` until its worker stops. The finer state is the job object's
    `detailed_status` (the dashboard and the CLI show it)."""
    return JobStatus.RUNNING if status in TRAINING else status


# The values `status` takes (public_status); a list filter on `running` matches the whole of TRAINING.
PUBLIC_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JobStatus if public_status(s) == s)


def statuses_shown_as(status: JobStatus) -> tuple[JobStatus, ...]:
    """The stored statuses a list filter matches: those `status` shows as `status` (a fine status,
    e.g. `cancel_requested`, matches only itself)."""
    return tuple(s for s in JobStatus if public_status(s) == status) if status in PUBLIC_STATUSES else (status,)


class Transition(StrEnum):
    """Every change of a job's status, named for what causes it. `TRANSITIONS` says where each may
    start and where it ends; tuneforge/app/jobs/lifecycle.py applies them (one function each) and
    is the only writer of a job's status. A job is created `queued`."""

    # A worker took a queued job (each attempt).
    CLAIM = "claim"
    # A worker found the organization at its running-jobs cap: the job stays queued, unsent, for
    # the reconciler to send again.
    DEFER = "defer"
    # The owning worker recorded the run's end.
    SUCCEED = "succeed"
    FAIL = "fail"
    # A user cancelled a job no worker holds (waiting, or paused).
    CANCEL = "cancel"
    # A user cancelled a training job: its worker stops at the next step boundary.
    REQUEST_CANCEL = "request_cancel"
    # A sweep's pruner stopped a running trial: it ends `cancelled` with stop_reason `pruned`.
    PRUNE = "prune"
    # The owning worker stopped on a cancel (or a prune).
    COMPLETE_CANCEL = "complete_cancel"
    # A user paused a job no worker has claimed: held until resumed.
    HOLD = "hold"
    # A user paused a running job: its worker checkpoints at the next step boundary.
    REQUEST_PAUSE = "request_pause"
    # Resumed before the worker stopped: it keeps training.
    WITHDRAW_PAUSE = "withdraw_pause"
    # The owning worker checkpointed and let go.
    COMPLETE_PAUSE = "complete_pause"
    # A user resumed a paused job: queued again, to continue from its last complete checkpoint.
    RESUME = "resume"
    # The owning worker gives the job back as a new attempt (it is shutting down, a rank of a
    # multi-device job died, or a pause was withdrawn after the checkpoint was saved).
    HAND_BACK = "hand_back"
    # The reconciler, for a job whose lease expired (its worker died): a new attempt; or
    # `worker_lost` once the attempts are used up; a cancel or a pause the worker never finished.
    REQUEUE_EXPIRED = "requeue_expired"
    FAIL_EXPIRED = "fail_expired"
    CANCEL_EXPIRED = "cancel_expired"
    PAUSE_EXPIRED = "pause_expired"


@dataclass(frozen=True)
class Rule:
    """Where a transition may start (`sources`), where it ends, and the webhook event it sends."""

    sources: tuple[JobStatus, ...]
    target: JobStatus
    webhook: str | None = None


def _notifying(sources: tuple[JobStatus, ...], target: JobStatus) -> Rule:
    """A transition that sends the job's `fine_tuning.job.<target>` webhook (docs/webhooks.md)."""
    return Rule(sources, target, f"fine_tuning.job.{target}")


_S = JobStatus
# The allowed transitions. Terminal states are never a source: they are final. Every update is
# conditional on the sources (`UPDATE ... WHERE status IN (...)`), so two processes racing on a job
# cannot both apply a transition, and the loser writes nothing.
TRANSITIONS: Mapping[Transition, Rule] = MappingProxyType(
    {
        Transition.CLAIM: _notifying((_S.QUEUED,), _S.RUNNING),
        Transition.DEFER: Rule((_S.QUEUED,), _S.QUEUED),
        Transition.SUCCEED: _notifying(TRAINING, _S.SUCCEEDED),
        Transition.FAIL: _notifying(TRAINING, _S.FAILED),
        Transition.CANCEL: _notifying((_S.VALIDATING_FILES, _S.QUEUED, _S.PAUSED), _S.CANCELLED),
        Transition.REQUEST_CANCEL: Rule((_S.RUNNING, _S.PAUSE_REQUESTED), _S.CANCEL_REQUESTED),
        Transition.PRUNE: Rule((_S.RUNNING,), _S.CANCEL_REQUESTED),
        Transition.COMPLETE_CANCEL: _notifying((_S.CANCEL_REQUESTED,), _S.CANCELLED),
        Transition.HOLD: Rule((_S.VALIDATING_FILES, _S.QUEUED), _S.PAUSED),
        Transition.REQUEST_PAUSE: Rule((_S.RUNNING,), _S.PAUSE_REQUESTED),
        Transition.WITHDRAW_PAUSE: Rule((_S.PAUSE_REQUESTED,), _S.RUNNING),
        Transition.COMPLETE_PAUSE: Rule((_S.PAUSE_REQUESTED,), _S.PAUSED),
        Transition.RESUME: Rule((_S.PAUSED,), _S.QUEUED),
        Transition.HAND_BACK: Rule((_S.RUNNING,), _S.QUEUED),
        Transition.REQUEUE_EXPIRED: Rule((_S.RUNNING,), _S.QUEUED),
        Transition.FAIL_EXPIRED: _notifying((_S.RUNNING,), _S.FAILED),
        Transition.CANCEL_EXPIRED: _notifying((_S.CANCEL_REQUESTED,), _S.CANCELLED),
        Transition.PAUSE_EXPIRED: Rule((_S.PAUSE_REQUESTED,), _S.PAUSED),
    }
)


class StopReason(StrEnum):
    """Why the training loop stopped before its last step (`Reporter.stop_requested`)."""

    CANCELLED = "cancelled"
    # Another attempt owns the job now (the heartbeat could not renew the lease).
    LEASE_LOST = "lease_lost"
    # The worker process is stopping (SIGTERM): checkpoint and hand the job back.
    SHUTDOWN = "shutdown"
    # The job was paused: checkpoint and release the worker; `resume` queues it again.
    PAUSED = "paused"
    # A rank of a multi-device job died (killed, lost its device): hand the job back to resume.
    RANK_LOST = "rank_lost"
    # A sweep's pruner stopped this trial: it ends `cancelled` with `stop_reason="pruned"`.
    PRUNED = "pruned"


class SweepStatus(StrEnum):
    """A hyperparameter sweep's status (tuneforge/app/sweeps)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunOutcome(StrEnum):
    """What one delivery of a job's message did, as the runner returns it (for logs and tests)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    # Handed back on shutdown: queued again as a new attempt.
    REQUEUED = "requeued"
    # Handed back on shutdown, but the job was no longer ours to hand back.
    LOST = "lost"
    # Checkpointed and released on a pause request.
    PAUSED = "paused"
    # Left queued: the organization is at its running-jobs cap.
    DEFERRED = "deferred"
    # Not claimed: a duplicate delivery, or a job that already finished.
    SKIPPED = "skipped"


class ErrorCode(StrEnum):
    """`error.code` of a failed job: user errors first, then system errors."""

    INVALID_FILE = "invalid_file"
    INVALID_SPEC = "invalid_spec"
    OOM = "oom"
    NAN_LOSS = "nan_loss"
    WORKER_LOST = "worker_lost"
    STORE_UNAVAILABLE = "store_unavailable"
    INTERNAL = "internal"


# A job event's severity and kind, exactly OpenAI's (`metrics` events carry `data`). Sample generations
# are announced by a `message` event whose data is `{"kind": "samples", "step", "count"}` (read them with
# GET /v1/fine_tuning/jobs/{id}/samples); rows written as `samples` before are shown that way too.
EventLevel = Literal["info", "warn", "error"]
EventType = Literal["message", "metrics"]
SAMPLES_EVENT = "samples"


class JobAction(StrEnum):
    """What a user may ask of a job, each `POST /v1/fine_tuning/jobs/{id}/<action>` (the dashboard's buttons)."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"


# The transitions each action may apply, whichever the job's status allows (tuneforge/app/jobs/service.py,
# pausing.py): a job no worker holds changes at once, a training one is asked to.
ACTION_TRANSITIONS: Mapping[JobAction, tuple[Transition, ...]] = MappingProxyType(
    {
        JobAction.CANCEL: (Transition.CANCEL, Transition.REQUEST_CANCEL),
        JobAction.PAUSE: (Transition.HOLD, Transition.REQUEST_PAUSE),
        JobAction.RESUME: (Transition.RESUME, Transition.WITHDRAW_PAUSE),
    }
)


def allowed_actions(status: JobStatus) -> tuple[JobAction, ...]:
    """The actions that act on a job in `status` (the job object's `allowed_actions`): those with a
    transition that starts from it (`ACTION_TRANSITIONS`, `TRANSITIONS`). Any other action is refused
    with a 409 (a finished job; pausing or resuming one being cancelled) or changes nothing (pausing a
    paused job, resuming a running one, cancelling one already being cancelled)."""
    return tuple(
        action
        for action, moves in ACTION_TRANSITIONS.items()
        if any(status in TRANSITIONS[move].sources for move in moves)
    )

"""One vocabulary for where a job is and how a run ended."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class JobStatus(StrEnum):
    """A job's status, as stored and as the API shows it (OpenAI's names, plus `cancel_requested`)."""

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


# A job event's severity and kind, as OpenAI's job events carry them (`metrics` events carry `data`;
# `samples` events announce sample generations, read with GET /v1/fine_tuning/jobs/{id}/samples).
EventLevel = Literal["info", "warn", "error"]
EventType = Literal["message", "metrics", "samples"]

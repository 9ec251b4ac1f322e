"""The event types a webhook endpoint can subscribe to."""

from __future__ import annotations

from enum import StrEnum

from tuneforge.contract.status import JobStatus


class WebhookEvent(StrEnum):
    # OpenAI's fine-tuning events, in OpenAI's payload shape.
    JOB_SUCCEEDED = "fine_tuning.job.succeeded"
    JOB_FAILED = "fine_tuning.job.failed"
    JOB_CANCELLED = "fine_tuning.job.cancelled"
    # Tuneforge's additions.
    JOB_RUNNING = "fine_tuning.job.running"
    SWEEP_COMPLETED = "fine_tuning.sweep.completed"


# The event a job status change emits (statuses not listed emit none).
JOB_STATUS_EVENTS: dict[JobStatus, WebhookEvent] = {
    JobStatus.RUNNING: WebhookEvent.JOB_RUNNING,
    JobStatus.SUCCEEDED: WebhookEvent.JOB_SUCCEEDED,
    JobStatus.FAILED: WebhookEvent.JOB_FAILED,
    JobStatus.CANCELLED: WebhookEvent.JOB_CANCELLED,
}

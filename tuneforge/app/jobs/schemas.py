from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from tuneforge.app.core.schemas import omitted_if_none
from tuneforge.app.db.models import Checkpoint, Job, JobEvent, JobMetric, JobSample
from tuneforge.app.db.types import unix, utcnow
from tuneforge.app.jobs.request import openai_hyperparameters, openai_integrations, openai_method
from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import (
    SAMPLES_EVENT,
    TRAINING,
    EventLevel,
    EventType,
    JobAction,
    JobStatus,
    public_status,
)
from tuneforge.contract.status import allowed_actions as actions_allowed_in

log = logging.getLogger(__name__)


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Progress(BaseModel):
    step: int
    total_steps: int | None
    epoch: float
    percentage: float | None
    elapsed_s: float | None
    remaining_s: float | None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    model: str
    organization_id: str
    status: JobStatus = Field(
        description="OpenAI's statuses: validating_files, queued, running, paused, succeeded, failed, cancelled. "
        "A running job whose cancel or pause was asked for reads `running` until its worker stops "
        "(`detailed_status` says which)."
    )
    hyperparameters: dict[str, Any]
    result_files: list[str]
    seed: int
    training_file: str
    validation_file: str | None = None
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] | None = omitted_if_none()
    integrations: list[Any] | None = omitted_if_none()
    suffix: str | None = None
    # Tuneforge additions
    detailed_status: JobStatus = Field(
        description="Tuneforge: `status`, or `cancel_requested` / `pause_requested` while a running job stops "
        "on a cancel or a pause (its worker stops at the next step boundary)."
    )
    progress: Progress
    attempt: int
    started_at: int | None = None
    spec: dict[str, Any] = Field(description="The fully resolved job spec the worker trains from.")
    final_metrics: dict[str, Any] | None = Field(None, description="Final evaluation metrics, when trained.")
    gpu_class: str | None = Field(None, description="The GPU class (TUNEFORGE_GPU_QUEUES) the job was routed to.")
    stop_reason: str | None = Field(None, description="`pruned` when a sweep's pruner stopped this job.")
    model_deleted_at: int | None = omitted_if_none(
        "When its fine-tuned model was deleted (`DELETE /v1/models/{id}`): its adapter and merged exports are gone; "
        "the job, its metrics, checkpoints and result files stay. Absent while the model exists."
    )
    allowed_actions: list[JobAction] = Field(
        default_factory=list,
        description="The actions (`POST /v1/fine_tuning/jobs/{id}/cancel|pause|resume`) that act on the job in "
        "its current status; empty once it is finished or being cancelled.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_older_servers(cls, data: Any) -> Any:
        """The CLI reads jobs with this model, from servers older than `detailed_status` too."""
        if isinstance(data, dict) and "detailed_status" not in data and "status" in data:
            return {**data, "detailed_status": data["status"]}
        return data

    @classmethod
    def of(cls, job: Job, now: dt.datetime | None = None) -> FineTuningJob:
        now = now or utcnow()
        spec = _readable_spec(job)
        hp = openai_hyperparameters(spec)
        progress = _progress(job, now)
        estimated = None
        if job.status in TRAINING and progress.remaining_s is not None:
            estimated = int(now.timestamp() + progress.remaining_s)
        return cls(
            id=job.id,
            created_at=unix(job.created_at) or 0,
            model=job.model,
            organization_id=job.organization_id,
            status=public_status(job.status),
            detailed_status=job.status,
            hyperparameters=hp,
            result_files=list(job.result_files or []),
            seed=job.seed,
            training_file=job.training_file,
            validation_file=job.validation_file,
            error=JobError(**job.error) if job.error else None,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=unix(job.finished_at),
            trained_tokens=job.trained_tokens,
            estimated_finish=estimated,
            metadata=job.job_metadata,
            method=openai_method(spec),
            integrations=openai_integrations(spec),
            suffix=job.suffix,
            progress=progress,
            attempt=job.attempt,
            started_at=unix(job.started_at),
            spec=job.spec,
            final_metrics=job.final_metrics,
            gpu_class=job.gpu_class,
            stop_reason=job.stop_reason,
            model_deleted_at=unix(job.model_deleted_at),
            allowed_actions=list(actions_allowed_in(job.status)),
        )


def _readable_spec(job: Job) -> JobSpec:
    """The job's stored spec. One this version cannot read (written by another version of Tuneforge, or
    into the database by hand) is shown with the defaults in OpenAI's fields (`hyperparameters`,
    `method`), its own `spec` as stored, rather than failing every page of jobs it is on."""
    try:
        return JobSpec.model_validate(job.spec)
    except ValidationError as exc:
        log.warning("job %s: its stored spec is not valid for this version (%s); shown with the defaults", job.id, exc)
        return JobSpec.model_validate({"seed": job.seed or 0})


def _progress(job: Job, now: dt.datetime) -> Progress:
    elapsed = remaining = pct = None
    if job.started_at is not None:
        end = job.finished_at or now
        elapsed = max(0.0, (end - job.started_at).total_seconds())
    if job.total_steps:
        pct = round(100.0 * min(job.step, job.total_steps) / job.total_steps, 2)
        if job.status == JobStatus.SUCCEEDED:
            pct = 100.0
        if elapsed is not None and job.step > 0 and job.status in TRAINING:
            remaining = round(elapsed / job.step * max(0, job.total_steps - job.step), 1)
    return Progress(
        step=job.step,
        total_steps=job.total_steps,
        epoch=round(job.epoch or 0.0, 4),
        percentage=pct,
        elapsed_s=round(elapsed, 1) if elapsed is not None else None,
        remaining_s=remaining,
    )


class JobEventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: EventLevel
    message: str
    data: dict[str, Any] | None = omitted_if_none("`metrics` events: the step's metrics; others: details, if any.")
    type: EventType = "message"

    @classmethod
    def of(cls, e: JobEvent) -> JobEventObject:
        type_: str = e.type
        data = e.data
        if type_ == SAMPLES_EVENT:  # a row written before sample events became `message` events
            type_, data = "message", {"kind": SAMPLES_EVENT, **(data or {})}
        return cls(
            id=e.id,
            created_at=unix(e.created_at) or 0,
            level=e.level,
            message=e.message,
            data=data,
            type="metrics" if type_ == "metrics" else "message",
        )


class CheckpointMetrics(BaseModel):
    """OpenAI's checkpoint metrics; one that was not measured (no evaluation ran) is left out."""

    step: float | None = omitted_if_none()
    train_loss: float | None = omitted_if_none()
    valid_loss: float | None = omitted_if_none()
    train_mean_token_accuracy: float | None = omitted_if_none()
    valid_mean_token_accuracy: float | None = omitted_if_none()
    full_valid_loss: float | None = omitted_if_none()
    full_valid_mean_token_accuracy: float | None = omitted_if_none()


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int

    @classmethod
    def of(cls, c: Checkpoint, job: Job) -> CheckpointObject:
        base = job.fine_tuned_model or f"ft:{job.model}:{job.organization_id}:{job.suffix or ''}:{job.id}"
        return cls(
            id=c.id,
            created_at=unix(c.created_at) or 0,
            fine_tuned_model_checkpoint=f"{base}:ckpt-step-{c.step_number}",
            fine_tuning_job_id=c.job_id,
            metrics=CheckpointMetrics(
                **{k: v for k, v in (c.metrics or {}).items() if k in CheckpointMetrics.model_fields}
            ),
            step_number=c.step_number,
        )


class MetricPoint(BaseModel):
    step: int
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    num_tokens: int | None = None
    extra: dict[str, Any] | None = None

    @classmethod
    def of(cls, m: JobMetric) -> MetricPoint:
        return cls(
            step=m.step,
            epoch=m.epoch,
            loss=m.loss,
            eval_loss=m.eval_loss,
            learning_rate=m.learning_rate,
            grad_norm=m.grad_norm,
            tokens_per_second=m.tokens_per_second,
            num_tokens=m.num_tokens,
            extra=m.extra,
        )


class SampleObject(BaseModel):
    """One sample generation: what the adapter at `step` (0: the base model) said to `prompt`."""

    object: Literal["fine_tuning.job.sample"] = "fine_tuning.job.sample"
    step: int = Field(description="Optimizer step of the adapter; 0 is the base model, before training.")
    index: int = Field(description="The prompt's position in the job's sample prompts (same prompt, same index).")
    prompt: str
    output: str = Field(description="The greedy completion, special tokens removed.")
    tokens: int = Field(description="Tokens generated.")
    created_at: int

    @classmethod
    def of(cls, s: JobSample) -> SampleObject:
        return cls(
            step=s.step,
            index=s.index,
            prompt=s.prompt,
            output=s.output,
            tokens=s.tokens,
            created_at=unix(s.created_at) or 0,
        )


class MetricsSeries(BaseModel):
    object: Literal["fine_tuning.job.metrics"] = "fine_tuning.job.metrics"
    job_id: str
    total_points: int = Field(description="Points stored for the requested range, before downsampling.")
    data: list[MetricPoint]

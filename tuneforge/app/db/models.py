"""The schema. The database is the source of truth for every job; see tuneforge/app/db/migrations/ for its history."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tuneforge.app.db.types import SeqInt, StrEnumColumn, UTCDateTime, utcnow
from tuneforge.app.files.parsing import Format
from tuneforge.app.uploads.status import UploadStatus
from tuneforge.contract.status import EventLevel, EventType, JobStatus, SweepStatus


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # Only the SHA-256 of the key is kept; the key itself is shown once, at creation.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("organization_id", "idempotency_key", name="uq_files_org_idem"),
        Index("ix_files_org_seq", "organization_id", "seq"),
    )

    # `seq` orders lists and backs `after=` paging; `id` is the public identifier.
    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(SeqInt)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[Format] = mapped_column(String(16))
    n_rows: Mapped[int] = mapped_column(Integer)
    # Column name -> summary ({"type": "string"|"number"|"list"|..., "non_null": n}), used to check
    # a job spec against its data at submission without reading the file again.
    columns: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[Literal["uploaded", "processed", "error"]] = mapped_column(String(16), default="processed")
    storage_path: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idempotency_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("organization_id", "idempotency_key", name="uq_jobs_org_idem"),
        Index("ix_jobs_org_seq", "organization_id", "seq"),
        Index("ix_jobs_status", "status"),
    )

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    model: Mapped[str] = mapped_column(String(512))
    status: Mapped[JobStatus] = mapped_column(StrEnumColumn(JobStatus))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    job_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(SeqInt, nullable=True)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)

    # Progress, kept on the row so polling a job is one indexed read.
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epoch: Mapped[float] = mapped_column(Float, default=0.0)

    # Ownership: at most one worker holds an unexpired lease on a running job.
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The GPU class (TUNEFORGE_GPU_QUEUES) the job was routed to at submission; None: the default queue.
    gpu_class: Mapped[str | None] = mapped_column(String(64), nullable=True)

    # Artifacts, recorded by the worker; never a path a user supplied.
    adapter_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    adapter_manifest: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    final_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Why a cancelled job stopped: null for a user's cancel, `pruned` when a sweep's pruner stopped it.
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # When its owner deleted the fine-tuned model (`DELETE /v1/models/{id}`): the final adapter and its
    # exports are gone from the store; the job row, its metrics and its checkpoints stay.
    model_deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idempotency_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    level: Mapped[EventLevel] = mapped_column(String(8), default="info")
    type: Mapped[EventType] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobMetric(Base):
    """One point of the step series. (job_id, step) is the key, so a resumed attempt that logs a
    step again replaces the dead attempt's point instead of doubling it."""

    __tablename__ = "job_metrics"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    eval_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    learning_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    grad_norm: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    num_tokens: Mapped[int | None] = mapped_column(SeqInt, nullable=True)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobSample(Base):
    """One sample generation: the adapter at `step` (0: the base model) completing prompt number `index`.
    (job_id, step, index) is the key, so a resumed attempt that samples a step again replaces it."""

    __tablename__ = "job_samples"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step_number", name="uq_checkpoints_job_step"),)

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(Text)
    manifest: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CheckpointPermission(Base):
    """A fine-tuned model or checkpoint (its `ft:` id) shared by the organization that trained it with
    another organization (OpenAI's `project_id`), which may then chat with it and continue from it."""

    __tablename__ = "checkpoint_permissions"
    __table_args__ = (
        UniqueConstraint("model_id", "grantee_id", name="uq_checkpoint_permissions_model_grantee"),
        Index("ix_checkpoint_permissions_model_seq", "model_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    # The `ft:` id exactly as shared: a job's fine_tuned_model or one checkpoint's.
    model_id: Mapped[str] = mapped_column(String(600))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    grantee_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEndpoint(Base):
    """A URL an organization asked to be called back at, for the event types it listed."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_org_seq", "organization_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The signing secret (`whsec_...`): kept, because every delivery is signed with it.
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """The outbox: one row per (event, endpoint), written in the transaction that changed the job.
    A deliverer claims due rows with a conditional update and posts them."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_seq", "endpoint_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    # The event's id: the `webhook-id` header and the payload's `id`, the same on every retry.
    event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookAttempt(Base):
    """One POST of a delivery: the log an endpoint's owner reads."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "seq"),)

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerPresence(Base):
    """A worker's heartbeat: which queues it consumes, and when it was last seen. It lets the API say
    that a job waits on a GPU class no live worker serves, rather than stay silent."""

    __tablename__ = "worker_presence"

    worker_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Sweep(Base):
    """A hyperparameter sweep (tuneforge/app/sweeps): its trials are ordinary jobs, listed in `sweep_trials`."""

    __tablename__ = "sweeps"
    __table_args__ = (Index("ix_sweeps_org_seq", "organization_id", "seq"), Index("ix_sweeps_status", "status"))

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    status: Mapped[SweepStatus] = mapped_column(StrEnumColumn(SweepStatus))
    # The job body every trial starts from (JobCreate's JSON), and the search itself.
    job_body: Mapped[dict[str, Any]] = mapped_column(JSON)
    search_space: Mapped[dict[str, Any]] = mapped_column(JSON)
    strategy: Mapped[str] = mapped_column(String(16))
    objective_metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16))
    pruner: Mapped[dict[str, Any]] = mapped_column(JSON)
    max_trials: Mapped[int] = mapped_column(Integer)
    max_parallel: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    # Trials created so far: creating trial n is a conditional update from n to n+1, so two API
    # processes driving the same sweep cannot both create it.
    trials_created: Mapped[int] = mapped_column(Integer, default=0)
    best_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sweep_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SweepTrial(Base):
    """One trial: its number in the sweep, the parameters Optuna proposed, and the job that runs it.
    Its status, metrics and objective value are read from the job."""

    __tablename__ = "sweep_trials"
    __table_args__ = (UniqueConstraint("sweep_id", "number", name="uq_sweep_trials_number"),)

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Upload(Base):
    """An upload in parts (`/v1/uploads`, tuneforge/app/uploads/): pending until completed into a file,
    cancelled, or expired. Its parts live in the store under `uploads/<id>/` until then."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_org_status", "organization_id", "status"),
        Index("ix_uploads_status_expires", "status", "expires_at"),
        Index("ix_uploads_parts_removed", "parts_removed", "status"),
    )

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    mime_type: Mapped[str] = mapped_column(String(255))
    # What the client declared, and what its parts hold so far (they may hold more: a retried part).
    bytes: Mapped[int] = mapped_column(SeqInt)
    received_bytes: Mapped[int] = mapped_column(SeqInt, default=0)
    n_parts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[UploadStatus] = mapped_column(StrEnumColumn(UploadStatus))
    # Set while one request assembles the file: a second `complete` (or a part, a cancel, the
    # sweeper) waits its turn instead of racing it. A process that died mid-way lets go after a lease.
    completing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Whether the parts' objects are gone from the store (after completion, cancel or expiry).
    parts_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class UploadPart(Base):
    __tablename__ = "upload_parts"
    __table_args__ = (Index("ix_upload_parts_upload", "upload_id"),)

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"))
    bytes: Mapped[int] = mapped_column(SeqInt)
    storage_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

"""GPU-class routing. TUNEFORGE_GPU_QUEUES names the classes and their memory, e.g.
`{"gpu-24g": 24, "gpu-80g": 80}`; each class is a Celery queue of that name, consumed by
`tuneforge worker --queue gpu-24g`. At submission the memory estimator's peak (plus the CUDA runtime
allowance) picks the smallest class that holds it, and the job records it (`jobs.gpu_class`).
A job no class holds is refused with a 400, as with TUNEFORGE_WORKER_GPU_MEMORY_GB.

A class no live worker serves (no heartbeat in `worker_presence` for PRESENCE_TTL) gets the queued
job an event that says so, at submission and from the reconciler, instead of silence.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import InvalidRequest
from tuneforge.app.db.types import utcnow
from tuneforge.app.fleet import repository
from tuneforge.app.jobs import repository as jobs_repo
from tuneforge.app.jobs.memory_estimate import GB, RUNTIME_ALLOWANCE_GB, estimate
from tuneforge.contract.spec import JobSpec

# A worker is live while its heartbeat (every PRESENCE_SECONDS) is younger than this.
PRESENCE_SECONDS = 10.0
PRESENCE_TTL = dt.timedelta(seconds=60)
NO_WORKER = "No live worker serves GPU class"


def pick_gpu_class(spec: JobSpec, config: dict[str, Any] | None, settings: Settings) -> str | None:
    """The smallest configured class the job fits, or None when no classes are configured (the job
    goes to TUNEFORGE_QUEUE). A config the estimator cannot read goes to the largest class."""
    classes = sorted(settings.gpu_queues.items(), key=lambda kv: (kv[1], kv[0]))
    if not classes:
        return None
    est = estimate(config, spec) if config is not None else None
    if est is None:
        return classes[-1][0]
    needed = est.total / GB + RUNTIME_ALLOWANCE_GB
    for name, memory_gb in classes:
        if needed <= memory_gb:
            return name
    listed = ", ".join(f"{n} ({m:g} GB)" for n, m in classes)
    raise InvalidRequest(
        f"This job needs an estimated {est.describe()} plus {RUNTIME_ALLOWANCE_GB:.0f} GB of CUDA runtime, "
        f"more than any GPU class ({listed}). Lower training.batch_size or training.max_seq_length, set "
        "training.gradient_checkpointing=true, or use 4-bit quantization.",
        param="training.batch_size",
        code="insufficient_gpu_memory",
    )


def queue_of(gpu_class: str | None, settings: Settings) -> str:
    return gpu_class or settings.queue


def note_unserved(session: Session, settings: Settings, jobs: list[tuple[str, str | None]] | None = None) -> int:
    """Give each queued job whose class no live worker serves one event saying so (not repeated
    while it is the job's latest event). Returns how many events were added."""
    if not settings.gpu_queues:
        return 0
    live = repository.live_queues(session, utcnow() - PRESENCE_TTL)
    added = 0
    for job_id, gpu_class in repository.queued_by_class(session) if jobs is None else jobs:
        queue = queue_of(gpu_class, settings)
        if queue in live or (jobs_repo.last_event_message(session, job_id) or "").startswith(NO_WORKER):
            continue
        jobs_repo.add_event(
            session,
            job_id,
            f"{NO_WORKER} '{queue}': the job waits in the queue until a worker runs `tuneforge worker --queue {queue}`",
            level="warn",
            data={"gpu_class": queue},
        )
        added += 1
    return added

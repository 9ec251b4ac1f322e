"""Celery tasks. Thin: claim, run, record all live in worker.runner."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_shutting_down

from tuneforge.contract.queue import INFER_TASK, TRAIN_TASK
from tuneforge.worker.celery_app import celery_app
from tuneforge.worker.db_reporter import SHUTDOWN


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    # Celery's warm shutdown waits for the running task; this makes the task end promptly, after
    # a checkpoint, instead of training to the end.
    SHUTDOWN.set()


@celery_app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> str:
    from tuneforge.worker.runner import execute  # torch loads in the worker process only

    return execute(job_id)


@celery_app.task(name=INFER_TASK)
def infer(request: dict[str, Any]) -> str:
    from tuneforge.worker.serving import execute  # torch loads in the worker process only

    return execute(request)

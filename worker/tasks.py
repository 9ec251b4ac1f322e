"""Celery tasks. Thin: claim, run, record all live in worker.runner."""

from __future__ import annotations

from worker.celery_app import TRAIN_TASK, celery_app


@celery_app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> str:
    from worker.runner import execute  # torch loads in the worker only, never in the API

    return execute(job_id)

"""The Celery application. Light to import: the API uses it only to publish job ids.

Reliability settings, chosen deliberately (docs/reliability.md):
- `task_acks_late`: a message is acknowledged only after the task returns, so a worker that dies
  mid-job does not take the message with it.
- `worker_prefetch_multiplier=1`: a worker holding one GPU reserves one job at a time.
- `visibility_timeout`: Redis re-delivers an unacknowledged message after this long. Jobs run longer
  than any sane timeout, so re-delivery is expected; the job lease (not the broker) decides who
  trains, and a duplicate delivery exits at once.
"""

from __future__ import annotations

from celery import Celery

from app.core.config import get_settings

TRAIN_TASK = "tuneforge.train_job"


def transport_options(broker_url: str) -> dict[str, object]:
    if broker_url.startswith("sqla+"):
        # kombu's SQLAlchemy transport hands these to create_engine(); it takes no Redis options.
        return {}
    return {"visibility_timeout": 6 * 3600}


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("tuneforge", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_default_queue=settings.queue,
        task_routes={TRAIN_TASK: {"queue": settings.queue}},
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings.broker_url or ""),
        task_serializer="json",
        accept_content=["json"],
    )
    return app


celery_app = make_celery()


def publish_train(job_id: str) -> None:
    """Only the job id travels; the worker reads everything else from the database."""
    celery_app.send_task(
        TRAIN_TASK,
        args=[job_id],
        queue=get_settings().queue,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )

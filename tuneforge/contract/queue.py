"""The queue: task and queue names, and the Celery configuration both sides build from.

Only a job id travels; the worker reads everything else from the database. The API builds a
producer from `make_celery()` and the worker a consumer, so neither imports the other's code.

Reliability settings, chosen deliberately (docs/reliability.md):
- `task_acks_late`: a message is acknowledged only after the task returns, so a worker that dies
  mid-job does not take the message with it.
- `worker_prefetch_multiplier=1`: a worker holding one GPU reserves one job at a time.
- `visibility_timeout`: Redis re-delivers an unacknowledged message after this long. Jobs run longer
  than any sane timeout, so re-delivery is expected; the job lease (not the broker) decides who
  trains, and a duplicate delivery exits at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

TRAIN_TASK = "tuneforge.train_job"
DEFAULT_TRAIN_QUEUE = "gpu"
# Chat and completion requests go to their own queue, consumed by `tuneforge worker --queue
# inference`, so a chat never waits behind a training run (docs/serving.md). Unlike a training
# message, an inference message carries the whole request: it is short-lived and never re-sent.
INFER_TASK = "tuneforge.infer"
DEFAULT_INFERENCE_QUEUE = "inference"

# Publishing retries briefly and then gives up: a job that could not be published stays `queued`
# in the database, and the reconciler sends it again.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def transport_options(broker_url: str) -> dict[str, object]:
    if broker_url.startswith("sqla+"):
        # kombu's SQLAlchemy transport hands these to create_engine(); it takes no Redis options.
        return {}
    return {"visibility_timeout": 6 * 3600}


def make_celery(
    broker_url: str,
    train_queue: str,
    include: Sequence[str] = (),
    inference_queue: str = DEFAULT_INFERENCE_QUEUE,
) -> Celery:
    app = Celery("tuneforge", broker=broker_url, include=list(include))
    app.conf.update(
        task_default_queue=train_queue,
        task_routes={TRAIN_TASK: {"queue": train_queue}, INFER_TASK: {"queue": inference_queue}},
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(broker_url),
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def send_train(app: Celery, job_id: str, queue: str) -> None:
    """Publish one job id to a training queue."""
    app.send_task(TRAIN_TASK, args=[job_id], queue=queue, retry=True, retry_policy=PUBLISH_RETRY_POLICY)


def send_infer(app: Celery, request: dict[str, object], queue: str, expires: float) -> None:
    """Publish one chat/completion request. `expires` (seconds): a worker that receives it later
    drops it, because the API has already answered 504."""
    app.send_task(
        INFER_TASK, args=[request], queue=queue, expires=expires, retry=True, retry_policy=PUBLISH_RETRY_POLICY
    )

"""Publishing job ids to the queue, from the API side, written once.

The rule (docs/reliability.md): a job is committed as `queued` before its id is published, and it is
marked `enqueued_at` only after the broker took the message. A publish that fails leaves the job
`queued` and unmarked, and the reconciler sends it again; a duplicate message is harmless, because
a worker's claim is a conditional update that only one delivery can win.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache

from celery import Celery
from sqlalchemy.orm import Session

from tuneforge.app.core.config import get_settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.fleet import repository as fleet
from tuneforge.app.jobs import repository
from tuneforge.contract.queue import make_celery, send_train

log = logging.getLogger("tuneforge.dispatch")


@lru_cache(maxsize=1)
def producer() -> Celery:
    """A Celery app that only publishes: it registers no tasks and imports no worker code."""
    settings = get_settings()
    return make_celery(settings.broker_url, settings.queue, inference_queue=settings.inference_queue)


def publish(job_id: str) -> None:
    """Send a job id to its training queue: its GPU class's (tuneforge/app/fleet/routing.py), else
    TUNEFORGE_QUEUE. Raises when the broker cannot take it."""
    settings = get_settings()
    queue = settings.queue
    if settings.gpu_queues:
        with session_scope() as s:
            queue = fleet.gpu_class_of(s, job_id) or queue
    send_train(producer(), job_id, queue)


def publish_and_mark(session: Session, job_id: str, send: Callable[[str], None] | None = None) -> bool:
    """Publish a committed `queued` job and mark it sent (the caller commits the mark). Returns
    False, having logged why, when the broker is unreachable: the reconciler will send it.
    `send` replaces `publish` (the reconciler's tests record what it sends)."""
    try:
        (send or publish)(job_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the job to the reconciler
        log.warning("could not publish %s (%s); the reconciler will re-send it", job_id, type(exc).__name__)
        return False
    repository.mark_enqueued(session, job_id)
    return True

"""The worker's Celery application: the consumer side of `contract.queue`."""

from __future__ import annotations

from app.core.config import get_settings
from contract.queue import make_celery

_settings = get_settings()
celery_app = make_celery(
    _settings.broker_url, _settings.queue, include=["worker.tasks"], inference_queue=_settings.inference_queue
)

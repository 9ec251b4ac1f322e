"""The worker's Celery application: the consumer side of `contract.queue`."""

from __future__ import annotations

from tuneforge.app.core.config import get_settings
from tuneforge.contract.queue import make_celery

_settings = get_settings()
celery_app = make_celery(
    _settings.broker_url, _settings.queue, include=["tuneforge.worker.tasks"], inference_queue=_settings.inference_queue
)

if _settings.broker_url.startswith("sqla+"):
    # The embedded broker is polled; kombu's SQLAlchemy channel hands every transport option to
    # create_engine(), so the interval is set on the transport class (this process only).
    from kombu.transport.sqlalchemy import Transport

    Transport.polling_interval = _settings.broker_poll_seconds

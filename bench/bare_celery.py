"""Baseline for the POST -> running benchmark: a bare Celery task on the same Redis broker that
records when it started."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/12")
app = Celery("bare", broker=BROKER)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True)


@app.task(name="bare.started")
def started(token: str) -> None:
    redis.Redis.from_url(BROKER).rpush(f"bare:{token}", time.time())

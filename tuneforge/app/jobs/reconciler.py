"""Keeps the queue honest against the database (docs/reliability.md: lost messages, dead workers).

- A `queued` job whose message was never published, or was published long ago, is published again:
  a broker restart loses messages, the database does not. A duplicate is harmless, because the
  worker's claim is a conditional update that only one delivery can win.
- A `running` job whose lease expired lost its worker: it is re-queued with attempt+1, or failed
  with `worker_lost` once attempts are used up. An expired `cancel_requested` job is cancelled, an
  expired `pause_requested` job is paused. A `paused` job is never sent: only `resume` queues it.

It runs as a loop (tuneforge/app/core/loops.py, `reconciler`) inside every API process (`tuneforge
api` / `tuneforge up`): every status change is a transition of tuneforge/app/jobs/lifecycle.py, a
conditional update, so several API replicas running it at once cannot double-apply anything.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings
from tuneforge.app.core.loops import Loop, LoopName
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.types import utcnow
from tuneforge.app.fleet import routing
from tuneforge.app.jobs import dispatch, lifecycle, repository
from tuneforge.contract.status import JobStatus

log = logging.getLogger("tuneforge.reconciler")


def reconcile_once(session: Session, settings: Settings, publish: Callable[[str], None]) -> dict[str, int]:
    now = utcnow()
    counts = {"resent": 0, "requeued": 0, "failed": 0, "cancelled": 0, "paused": 0}
    for job in repository.expired_leases(session, now):
        # Each is a conditional update guarded by the worker read here and its expired lease, so a
        # job claimed or renewed meanwhile, or handled by another replica, is left alone.
        job_id, worker_id = job.id, job.worker_id
        if job.status == JobStatus.CANCEL_REQUESTED:
            if lifecycle.cancel_expired(session, job_id, worker_id):
                counts["cancelled"] += 1
        elif job.status == JobStatus.PAUSE_REQUESTED:
            if lifecycle.pause_expired(session, job_id, worker_id):
                counts["paused"] += 1
        elif lifecycle.requeue_expired(session, job_id, worker_id, max_attempts=settings.max_attempts):
            counts["requeued"] += 1
        elif lifecycle.fail_expired(session, job_id, worker_id, max_attempts=settings.max_attempts):
            counts["failed"] += 1
    session.commit()
    counts["unserved"] = routing.note_unserved(session, settings)
    session.commit()
    cutoff = now - dt.timedelta(seconds=settings.queued_resend_seconds)
    for job_id in repository.stale_queued(session, cutoff):
        if not dispatch.publish_and_mark(session, job_id, publish):
            break  # the broker is still down; the next round retries
        session.commit()
        counts["resent"] += 1
    return counts


class Reconciler(Loop):
    def __init__(self, settings: Settings, publish: Callable[[str], None]) -> None:
        super().__init__(LoopName.RECONCILER, settings.reconcile_seconds, log=log)
        self.settings = settings
        self.publish = publish

    def round(self) -> None:
        with session_scope() as session:
            counts = reconcile_once(session, self.settings, self.publish)
        if any(counts.values()):
            log.info("reconciled: %s", counts)

"""A worker's heartbeat into `worker_presence`: a loop beside Celery's consumer (so a worker busy
training still counts as live), started by `tuneforge worker` (tuneforge/app/core/loops.py, `presence`)."""

from __future__ import annotations

import logging

from tuneforge.app.core.loops import Loop, LoopName
from tuneforge.app.db.engine import session_scope
from tuneforge.app.fleet import repository
from tuneforge.app.fleet.routing import PRESENCE_SECONDS

log = logging.getLogger("tuneforge.worker")


class Presence(Loop):
    # The database may be down for a while: one line per failed beat, and keep trying.
    quiet_errors = True

    def __init__(self, worker_id: str, queues: list[str], interval: float = PRESENCE_SECONDS) -> None:
        super().__init__(LoopName.PRESENCE, interval, log=log, first_round_at_start=True)
        self.worker_id = worker_id
        self.queues = queues

    def beat(self) -> None:
        with session_scope() as s:
            repository.beat(s, self.worker_id, self.queues)

    def round(self) -> None:
        self.beat()

    def stop(self, *, wait: float | None = 5.0) -> None:
        """Stop beating (waiting for a beat in progress, so none follows), then leave at once."""
        super().stop(wait=wait)
        try:
            with session_scope() as s:
                repository.leave(s, self.worker_id)
        except Exception:  # noqa: BLE001 - it expires by itself
            pass

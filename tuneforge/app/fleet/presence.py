"""A worker's heartbeat into `worker_presence`: a daemon thread beside Celery's consumer (so a worker
busy training still counts as live), started by `tuneforge worker`."""

from __future__ import annotations

import logging
import threading

from tuneforge.app.db.engine import session_scope
from tuneforge.app.fleet import repository
from tuneforge.app.fleet.routing import PRESENCE_SECONDS

log = logging.getLogger("tuneforge.worker")


class Presence(threading.Thread):
    def __init__(self, worker_id: str, queues: list[str], interval: float = PRESENCE_SECONDS) -> None:
        super().__init__(name="tuneforge-presence", daemon=True)
        self.worker_id = worker_id
        self.queues = queues
        self.interval = interval
        self.stopping = threading.Event()

    def beat(self) -> None:
        with session_scope() as s:
            repository.beat(s, self.worker_id, self.queues)

    def run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - the database may be down for a while; keep trying
                log.warning("presence heartbeat failed (%s)", type(exc).__name__)
            if self.stopping.wait(self.interval):
                return

    def stop(self) -> None:
        self.stopping.set()
        try:
            with session_scope() as s:
                repository.leave(s, self.worker_id)
        except Exception:  # noqa: BLE001 - it expires by itself
            pass

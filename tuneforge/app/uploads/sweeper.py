"""Expires uploads past their time and removes the parts of ended ones, in a thread of each API process.

It comes with the uploads router (its lifespan), so registering the router is all an app does, and
every process serving the API runs it. Every step is a conditional update (`service.sweep_once`), so
replicas running it at once cannot double-apply anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tuneforge.app.core.config import Settings, get_settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.uploads.service import sweep_once

log = logging.getLogger("tuneforge.uploads")


class UploadSweeper(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="tuneforge-upload-sweeper", daemon=True)
        self.settings = settings
        self.stopping = threading.Event()

    def run(self) -> None:
        # The first round waits a period too: an app that lives a moment (a test client) never sweeps.
        while not self.stopping.wait(self.settings.upload_sweep_seconds):
            try:
                with session_scope() as session:
                    counts = sweep_once(session, self.settings)
                if any(counts.values()):
                    log.info("uploads swept: %s", counts)
            except Exception:  # a database or store outage: the next round retries
                log.warning("upload sweep failed", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


@asynccontextmanager
async def sweeping(_: Any) -> AsyncIterator[None]:
    sweeper = UploadSweeper(get_settings())
    sweeper.start()
    try:
        yield
    finally:
        sweeper.stop()

"""Expires uploads past their time and removes the parts of ended ones: the `uploads` loop of every API
process (tuneforge/app/core/loops.py). Every step is a conditional update (`service.sweep_once`), so
replicas running it at once cannot double-apply anything.
"""

from __future__ import annotations

import logging

from tuneforge.app.core.config import Settings
from tuneforge.app.core.loops import Loop, LoopName
from tuneforge.app.db.engine import session_scope
from tuneforge.app.uploads.service import sweep_once

log = logging.getLogger("tuneforge.uploads")


class UploadSweeper(Loop):
    def __init__(self, settings: Settings) -> None:
        # The first round waits a period too: an app that lives a moment never sweeps.
        super().__init__(LoopName.UPLOADS, settings.upload_sweep_seconds, log=log)
        self.settings = settings

    def round(self) -> None:
        with session_scope() as session:
            counts = sweep_once(session, self.settings)
        if any(counts.values()):
            log.info("uploads swept: %s", counts)

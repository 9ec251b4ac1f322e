"""One shell for the background loops: a named daemon thread that runs a round every `interval`
seconds until it is stopped. A round that raises is logged and the loop goes on with the next one
(the database or the broker may be down for a while; the loop outlives them).

The loops, each named so that TUNEFORGE_DISABLED_LOOPS can turn it off in a process:

| name | module | where |
|---|---|---|
| `reconciler` | tuneforge/app/jobs/reconciler.py | every API process |
| `sweeps` | tuneforge/app/sweeps/driver.py | every API process |
| `webhooks` | tuneforge/app/webhooks/deliverer.py | every API process |
| `uploads` | tuneforge/app/uploads/sweeper.py | every API process |
| `presence` | tuneforge/app/fleet/presence.py | every worker |

Every round of each is made of conditional updates, so the same loop running in several processes
at once cannot double-apply anything.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum


class LoopName(StrEnum):
    RECONCILER = "reconciler"
    SWEEPS = "sweeps"
    WEBHOOKS = "webhooks"
    UPLOADS = "uploads"
    PRESENCE = "presence"


# The loops `tuneforge api` runs (`--no-reconciler` turns them all off).
API_LOOPS: tuple[LoopName, ...] = (LoopName.RECONCILER, LoopName.SWEEPS, LoopName.WEBHOOKS, LoopName.UPLOADS)


def parse_loop_names(value: str) -> frozenset[LoopName]:
    """`reconciler,webhooks` (blanks and empty items ignored) -> the names; an unknown name raises
    ValueError naming the known ones."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in {m.value for m in LoopName}]
    if unknown:
        known = ", ".join(LoopName)
        raise ValueError(f"unknown loop {', '.join(map(repr, unknown))}; the loops are {known}")
    return frozenset(LoopName(n) for n in names)


class Loop(threading.Thread):
    """Subclasses implement `round()`; `lifetime()` holds what the loop keeps open while it runs."""

    # Log a failed round as one line naming the exception (a loop that only writes a heartbeat
    # while the database restarts), instead of with its traceback.
    quiet_errors = False

    def __init__(
        self, name: LoopName, interval: float, *, log: logging.Logger, first_round_at_start: bool = False
    ) -> None:
        super().__init__(name=f"tuneforge-{name}", daemon=True)
        self.loop_name = name
        self.interval = interval
        self.log = log
        self.first_round_at_start = first_round_at_start
        self._stopping = threading.Event()

    def round(self) -> None:
        raise NotImplementedError

    def lifetime(self) -> AbstractContextManager[object]:
        return nullcontext()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        with self.lifetime():
            if not self.first_round_at_start and self._stopping.wait(self.interval):
                return
            while True:
                self._round()
                if self._stopping.wait(self.interval):
                    return

    def _round(self) -> None:
        try:
            self.round()
        except Exception as exc:  # a failed round never ends the loop
            if self.quiet_errors:
                self.log.warning(
                    "%s round failed (%s); retrying in %gs", self.loop_name, type(exc).__name__, self.interval
                )
            else:
                self.log.exception("%s round failed; retrying in %gs", self.loop_name, self.interval)

    def stop(self, *, wait: float | None = None) -> None:
        """Ask the loop to end after its current round; with `wait`, wait that long for it to end."""
        self._stopping.set()
        if wait is not None and self.is_alive() and threading.current_thread() is not self:
            self.join(wait)

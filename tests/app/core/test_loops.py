"""The background loops' shell (tuneforge/app/core/loops.py) and TUNEFORGE_DISABLED_LOOPS: a round
that raises is logged and the loop goes on; each loop can be turned off by its name; an unknown name
stops the process at start-up; `tuneforge api --no-reconciler` is the API's loop names."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tests.helpers import ROOT
from tuneforge.app.cli import disable_loops
from tuneforge.app.core.config import Settings, get_settings
from tuneforge.app.core.loops import API_LOOPS, Loop, LoopName, parse_loop_names
from tuneforge.app.main import background_loops, create_app

log = logging.getLogger("tuneforge.test.loops")


class Counting(Loop):
    """Counts its rounds; every other one raises. Records whether its lifetime is open."""

    def __init__(self, interval: float = 0.02, **kw: bool) -> None:
        super().__init__(LoopName.RECONCILER, interval, log=log, **kw)
        self.rounds = 0
        self.open = False
        self.events: list[str] = []

    @contextmanager
    def lifetime(self) -> Iterator[None]:
        self.open = True
        self.events.append("opened")
        try:
            yield
        finally:
            self.open = False
            self.events.append("closed")

    def round(self) -> None:
        assert self.open
        self.rounds += 1
        if self.rounds % 2:
            raise RuntimeError(f"round {self.rounds} failed")


def wait_for(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_failing_round_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    loop = Counting()
    with caplog.at_level(logging.ERROR, logger=log.name):
        loop.start()
        wait_for(lambda: loop.rounds >= 4)
        loop.stop(wait=5)
    assert not loop.is_alive() and loop.name == "tuneforge-reconciler"
    assert loop.events == ["opened", "closed"]
    failures = [r for r in caplog.records if "reconciler round failed" in r.getMessage()]
    assert len(failures) >= 2 and all(r.exc_info for r in failures)  # with the traceback


def test_a_quiet_loop_logs_one_line_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    loop = Counting()
    loop.quiet_errors = True
    with caplog.at_level(logging.WARNING, logger=log.name):
        loop.start()
        wait_for(lambda: loop.rounds >= 2)
        loop.stop(wait=5)
    failures = [r for r in caplog.records if "round failed (RuntimeError)" in r.getMessage()]
    assert failures and not any(r.exc_info for r in failures)


def test_the_first_round_waits_one_interval_unless_asked_to_run_at_start() -> None:
    waits, starts = Counting(interval=60), Counting(interval=60, first_round_at_start=True)
    waits.start()
    starts.start()
    wait_for(lambda: starts.rounds == 1)
    assert waits.rounds == 0
    for loop in (waits, starts):  # a stop ends the wait at once
        began = time.monotonic()
        loop.stop(wait=5)
        assert not loop.is_alive() and time.monotonic() - began < 5


def test_loop_names_parse_and_an_unknown_one_names_the_known_ones() -> None:
    assert parse_loop_names(" reconciler, Webhooks,,") == {LoopName.RECONCILER, LoopName.WEBHOOKS}
    assert parse_loop_names("") == frozenset()
    assert Settings(disabled_loops="presence").disabled_loops == {LoopName.PRESENCE}  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="TUNEFORGE_DISABLED_LOOPS: unknown loop 'reconcilers'") as err:
        Settings(disabled_loops="reconcilers")  # type: ignore[arg-type]
    assert "reconciler, sweeps, webhooks, uploads, presence" in str(err.value)


def test_an_unknown_loop_name_stops_the_api_at_start_up() -> None:
    env = {"TUNEFORGE_DISABLED_LOOPS": "reconciler,deliverer", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", "api", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "TUNEFORGE_DISABLED_LOOPS: unknown loop 'deliverer'" in r.stderr


def loop_threads() -> set[str]:
    """The named loops running in this process."""
    names = {f"tuneforge-{n}" for n in LoopName}
    return {t.name for t in threading.enumerate() if t.name in names and t.is_alive()}


def test_the_api_runs_the_loops_the_setting_leaves_on(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {loop.name for loop in background_loops(settings)} == {f"tuneforge-{n}" for n in API_LOOPS}
    monkeypatch.setattr(settings, "disabled_loops", frozenset({LoopName.SWEEPS, LoopName.WEBHOOKS, LoopName.UPLOADS}))
    before = loop_threads()
    with TestClient(create_app(run_loops=True)) as c:
        assert c.get("/healthz").status_code == 200
        assert loop_threads() - before == {"tuneforge-reconciler"}
    wait_for(lambda: "tuneforge-reconciler" not in loop_threads() - before)


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment and the cached settings as they were, after a test that changes them."""
    monkeypatch.delenv("TUNEFORGE_DISABLED_LOOPS", raising=False)
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_no_reconciler_is_the_apis_three_loops_added_to_the_setting(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEFORGE_DISABLED_LOOPS", "presence")
    disable_loops(API_LOOPS)
    assert get_settings().disabled_loops == set(LoopName)
    assert background_loops(get_settings()) == []

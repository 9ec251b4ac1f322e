"""A CPU worker's allocator mode (tuneforge/worker/training/host_memory.py): lean returns freed activations
to the OS (glibc's mmap threshold fixed at 1 MiB); auto trains fast on the heap until the process holds half
the memory within its reach, then goes lean once, with an event."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, make_spec, shakespeare_rows
from tuneforge.worker.training import host_memory
from tuneforge.worker.training.host_memory import (
    LARGE_BLOCK,
    HostMemory,
    HostMemoryPolicy,
    return_large_blocks_to_the_os,
)
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

MIB = 1 << 20


# Run in a fresh interpreter: in a process that freed large blocks into its heap before the threshold
# was set, malloc serves the next ones from those free chunks (already resident) and never maps.
_PROBE = """
import torch
from tuneforge.worker.training.host_memory import LARGE_BLOCK, return_large_blocks_to_the_os

def anon():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("RssAnon:"))

assert return_large_blocks_to_the_os(torch.device("cpu"))
size = 8 * LARGE_BLOCK
for _ in range(4):
    start = anon()
    block = torch.ones(size // 4)  # touched: resident
    held = anon()
    del block
    print(held - start, held - anon())
"""


def test_freed_large_tensors_go_back_to_the_os() -> None:
    """With glibc's default the threshold rises to the size of each mapped block freed, so from the
    second round on these blocks would come from the heap and stay in the process once freed."""
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rounds = [tuple(map(int, line.split())) for line in out.stdout.splitlines()]
    assert len(rounds) == 4
    for grew, returned in rounds:
        assert grew >= 8 * LARGE_BLOCK - MIB
        assert returned >= 8 * LARGE_BLOCK - MIB, "a freed 8 MiB tensor stayed in the process"


def test_left_alone_off_the_cpu() -> None:
    assert not return_large_blocks_to_the_os(torch.device("meta"))


def _thresholds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the thresholds set instead of setting them (the mode is process-wide)."""
    calls: list[int] = []

    def record(size: int, device: torch.device) -> bool:
        calls.append(size)
        return True

    monkeypatch.setattr(host_memory, "_set_threshold", record)
    return calls


def test_auto_starts_fast_when_the_model_is_small(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _thresholds(monkeypatch)
    host = HostMemory.start(HostMemoryPolicy.AUTO, torch.device("cpu"), model_dir)
    assert not host.lean and calls == [host_memory.HEAP_BLOCK]
    assert host.after_step(1) is None  # the tiny model's process is far below half the machine


def test_auto_starts_lean_when_the_weights_take_a_quarter_of_the_room(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _thresholds(monkeypatch)
    weights = host_memory._weights_bytes(model_dir)
    monkeypatch.setattr(host_memory, "room", lambda: 3 * weights)
    host = HostMemory.start(HostMemoryPolicy.AUTO, torch.device("cpu"), model_dir)
    assert host.lean and calls == [LARGE_BLOCK]


def test_fixed_policies_and_other_devices(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _thresholds(monkeypatch)
    monkeypatch.setattr(host_memory, "room", lambda: 1)  # as tight as can be: only `auto` reacts
    assert HostMemory.start(HostMemoryPolicy.LEAN, torch.device("cpu"), model_dir).lean
    fast = HostMemory.start(HostMemoryPolicy.FAST, torch.device("cpu"), model_dir)
    assert not fast.lean and fast.after_step(1) is None
    assert calls == [LARGE_BLOCK, host_memory.HEAP_BLOCK]
    off = HostMemory.start(HostMemoryPolicy.AUTO, torch.device("meta"), model_dir)
    assert not off.active and off.after_step(1) is None


def test_a_run_goes_lean_once_when_the_process_passes_half_its_room(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A real run whose room shrinks after its first step: one event, lean from then on, and the same
    adapter numbers as a run that stays fast (the allocator never changes a computed value)."""
    calls = _thresholds(monkeypatch)
    spec = make_spec(training={"batch_size": 4, "max_steps": 3})
    fast = MemoryReporter()
    run(spec, model_dir, shakespeare_rows(12), None, tmp_path / "fast", fast)
    assert calls == [host_memory.HEAP_BLOCK]

    steps: list[int] = []
    real_after = HostMemory.after_step

    def after(self: HostMemory, step: int) -> str | None:
        steps.append(step)
        if step == 1:  # from the first step on, the process holds more than half of its room
            monkeypatch.setattr(host_memory, "room", lambda: host_memory.resident())
        return real_after(self, step)

    monkeypatch.setattr(HostMemory, "after_step", after)
    reporter = MemoryReporter()
    run(spec, model_dir, shakespeare_rows(12), None, tmp_path / "tight", reporter)
    assert steps == [1, 2, 3]
    assert calls == [host_memory.HEAP_BLOCK, host_memory.HEAP_BLOCK, LARGE_BLOCK]
    warned = [(m, d) for level, m, d in reporter.events if "Host memory is tight" in m]
    assert len(warned) == 1 and warned[0][1] is not None and warned[0][1]["host_memory"]["step"] == 1
    assert [p["loss"] for p in reporter.points if "loss" in p] == [p["loss"] for p in fast.points if "loss" in p]

"""Freed activations leave a CPU worker's process (glibc's mmap threshold, fixed at 1 MiB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import ROOT, make_spec
from tuneforge.worker.training import setup
from tuneforge.worker.training.model import LARGE_BLOCK, return_large_blocks_to_the_os
from tuneforge.worker.training.reporter import MemoryReporter

MIB = 1 << 20


# Run in a fresh interpreter: in a process that freed large blocks into its heap before the threshold
# was set, malloc serves the next ones from those free chunks (already resident) and never maps.
_PROBE = """
import torch
from tuneforge.worker.training.model import LARGE_BLOCK, return_large_blocks_to_the_os

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


def test_prepare_model_sets_it_before_loading(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_load = setup.load_model

    def threshold(device: torch.device) -> bool:
        calls.append(f"threshold {device}")
        return True

    def load(*args: Any, **kwargs: Any) -> Any:
        calls.append("load")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(setup, "return_large_blocks_to_the_os", threshold)
    monkeypatch.setattr(setup, "load_model", load)
    setup.prepare_model(make_spec(), model_dir, None, torch.device("cpu"), MemoryReporter())
    assert calls == ["threshold cpu", "load"]

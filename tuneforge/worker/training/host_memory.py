"""Where a CPU worker's freed activations go: glibc's heap (fast) or straight back to the OS (lean).

glibc serves a block of 128 KiB or more with a mapping of its own, unmapped when freed, but each time
such a block is freed it raises that threshold to the block's size (up to 32 MiB). After the first
training step nearly every activation is below it, so the next steps' activations come from the heap,
where freed memory stays, fragmented: for SmolLM2 at batch 8 x 256 tokens the process peaked at 7.4 GB
for 4.8 GB of live tensors and held 7 GB between steps. With the threshold fixed at 1 MiB (lean) it
peaks at 5.1 GB and drops to 0.6 GB between steps (bench/memory_smollm2.py).

Lean costs speed: every large activation is then a fresh mapping whose pages the kernel zeroes. A
step took 1.33x-1.77x as long on 2 cores (bench/cpu_step.py), and a whole tiny-model job through the
service 1.9x the bare peft loop's time (bench/overhead.py). So the policy is a choice:

- `fast`: the heap (the threshold fixed at glibc's own ceiling, 32 MiB), what a bare training script gets;
- `lean`: the 1 MiB threshold, for a worker whose memory is tight;
- `auto` (the default): fast while the process has room, lean as soon as it has not. "Room" is the
  memory this process could still reach: its own resident memory plus what the machine has available,
  capped by its cgroup's limit. The run starts lean when the base model's files alone take more than
  a quarter of it (loading's temporaries are large blocks too), and otherwise switches to lean, once,
  after the first step that leaves the process holding more than half of it, returning the heap's free
  memory to the OS there and then. A memory limit fails a job and slowness does not, so the switch is
  one way; it changes where memory comes from, never a number the job computes.

On a GPU activations are not in host memory: nothing is changed there. Process-wide, and a worker
process trains one job at a time, so each run sets the mode it starts with.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

# glibc's mallopt parameter, and the sizes from which a block gets its own mapping.
_M_MMAP_THRESHOLD = -3
LARGE_BLOCK = 1 << 20
HEAP_BLOCK = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: as far as its own heuristic goes
LOAD_SHARE = 0.25
STEP_SHARE = 0.5


class HostMemoryPolicy(StrEnum):
    AUTO = "auto"
    FAST = "fast"
    LEAN = "lean"


@functools.cache
def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None  # not glibc (musl has none)


def _set_threshold(size: int, device: torch.device) -> bool:
    if device.type != "cpu" or (libc := _libc()) is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, size))


def return_large_blocks_to_the_os(device: torch.device) -> bool:
    """Lean: blocks of 1 MiB or more get mappings of their own, unmapped when freed. Returns whether it
    was set (glibc on a CPU only)."""
    return _set_threshold(LARGE_BLOCK, device)


def keep_large_blocks_in_the_heap(device: torch.device) -> bool:
    """Fast: blocks up to 32 MiB come from the heap and stay there once freed, ready for the next step."""
    return _set_threshold(HEAP_BLOCK, device)


def release_free_heap() -> None:
    if (libc := _libc()) is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "no limit"
            return int(text)
    return None


def resident() -> int:
    """This process's resident memory (Linux's /proc; glibc's mallopt is Linux's too)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def room() -> int:
    """The memory this process could reach: its own plus what the machine has available, within its cgroup."""
    reach = resident() + _available()
    limit = _cgroup_limit()
    return min(reach, limit) if limit is not None else reach


def _weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) or sum(
        p.stat().st_size for p in model_dir.glob("*.bin")
    )


@dataclass
class HostMemory:
    """The run's allocator mode; `after_step` is called after every optimizer step."""

    policy: HostMemoryPolicy
    active: bool  # a CPU with glibc on Linux: there is a choice to make
    lean: bool = False
    switched_at: dict[str, Any] | None = None

    @classmethod
    def start(cls, policy: HostMemoryPolicy, device: torch.device, model_dir: Path) -> HostMemory:
        """Set the mode the run starts in (before the model loads)."""
        active = device.type == "cpu" and _libc() is not None and Path("/proc/self/statm").exists()
        host = cls(policy, active)
        if not active:
            return host
        host.lean = policy is HostMemoryPolicy.LEAN or (
            policy is HostMemoryPolicy.AUTO and _weights_bytes(model_dir) > LOAD_SHARE * room()
        )
        (return_large_blocks_to_the_os if host.lean else keep_large_blocks_in_the_heap)(device)
        return host

    def after_step(self, step: int) -> str | None:
        """Under `auto`, go lean once the process holds more than half its room; returns the event to
        record when it does."""
        if not self.active or self.lean or self.policy is not HostMemoryPolicy.AUTO:
            return None
        held, reach = resident(), room()
        if held <= STEP_SHARE * reach:
            return None
        self.lean = True
        return_large_blocks_to_the_os(torch.device("cpu"))
        release_free_heap()
        self.switched_at = {"step": step, "resident_bytes": held, "room_bytes": reach, "pid": os.getpid()}
        return (
            f"Host memory is tight after step {step} ({held / 2**30:.1f} of {reach / 2**30:.1f} GiB within "
            "reach): freed activations now go back to the OS, which keeps the process small but makes "
            "each step slower (TUNEFORGE_HOST_MEMORY, docs/deployment.md)."
        )

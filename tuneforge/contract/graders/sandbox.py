"""The `python` grader's sandbox: tenant code in a child process that can reach nothing of ours.

Off unless the operator sets TUNEFORGE_PYTHON_GRADER_ENABLED=true (docs/security.md). Each run:

- a fresh temp dir holds the grader's source, its input (sample and item as JSON) and its output files;
- `unshare --net --mount --pid --fork --kill-child`: a network namespace with only a down loopback (no
  connection leaves, to 127.0.0.1 or elsewhere), a private mount namespace and a PID namespace whose
  processes all die with it;
- in it, a new root on an empty tmpfs that holds read-only bind mounts of /usr and Python's own prefix,
  and the temp dir as /work, the only writable place; `chroot --userspec` enters it as a fresh
  unprivileged uid (not root, not a user any other process runs as), so the data dir, the database's
  files, other tenants' files, /etc and /proc do not exist there, and nothing outside /work is writable;
- an empty environment (the worker's variables, keys and URLs are not inherited), `python -I -S`;
- rlimits: address space (RLIMIT_AS), CPU seconds, file size (the output files too), open files, and
  RLIMIT_NPROC=1 for that uid (no fork); and a wall-clock timeout that kills the namespace.

A grader that breaks a bound scores 0 for that sample, with the reason. It needs root (to create the
namespaces and switch uid) and util-linux's unshare/chroot: without them python graders are refused
rather than run unconfined. Not stopped: system calls themselves (no seccomp filter), so a kernel
exploit is out of scope; CPU use up to the limits; reading what /usr holds (world-readable anyway).
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "TUNEFORGE_PYTHON_GRADER_"

# Runs inside the sandbox: read the input, define grade(), call it, write the reward.
RUNNER = """\
import json, os
os.chdir("/work")
with open("input.json") as f:
    data = json.load(f)
with open("grader.py") as f:
    source = f.read()
ns = {"__name__": "grader"}
exec(compile(source, "grader.py", "exec"), ns)
if not callable(ns.get("grade")):
    raise SystemExit("the source defines no grade(sample, item) function")
reward = ns["grade"](data["sample"], data["item"])
with open("reward.json", "w") as f:
    json.dump({"reward": float(reward)}, f)
"""

# Builds the new root inside the namespaces, then drops to the grader's uid. $1 new root, $2 work dir,
# $3 Python's prefix, $4 uid, $5 the interpreter.
SETUP = """\
set -e
root=$1
mount -t tmpfs -o size=4m,mode=755 tmpfs "$root"
mkdir -p "$root/usr" "$root/work" "$root$3"
mount --rbind -o ro /usr "$root/usr"
mount -o remount,ro,bind "$root/usr"
mount --bind "$3" "$root$3"
mount -o remount,ro,bind "$root$3"
mount --bind "$2" "$root/work"
ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"; ln -s usr/bin "$root/bin"
mount -o remount,ro,bind "$root" 2>/dev/null || true
# Not exec'd: a grader killed by a signal (SIGXCPU) leaves this shell to exit with 128+signal, which
# unshare passes on as a plain status.
set +e
chroot --userspec="$4:$4" "$root" "$5" -I -S /work/runner.py
exit $?
"""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_mb: int = 512
    output_bytes: int = 65_536
    open_files: int = 32

    @classmethod
    def from_env(cls) -> SandboxLimits | None:
        """The operator's settings as the worker sees them (the API reads the same variables through
        its Settings); None when python graders are off."""
        if os.environ.get(ENV_PREFIX + "ENABLED", "").lower() not in ("1", "true", "yes"):
            return None
        d = cls()
        return cls(
            timeout_seconds=float(os.environ.get(ENV_PREFIX + "TIMEOUT_SECONDS", d.timeout_seconds)),
            cpu_seconds=int(os.environ.get(ENV_PREFIX + "CPU_SECONDS", d.cpu_seconds)),
            memory_mb=int(os.environ.get(ENV_PREFIX + "MEMORY_MB", d.memory_mb)),
            output_bytes=int(os.environ.get(ENV_PREFIX + "OUTPUT_BYTES", d.output_bytes)),
        )


@dataclass
class SandboxResult:
    reward: float | None
    error: str | None  # why there is no reward: the bound broken, or the grader's own error
    error_type: str | None  # timeout, cpu_time, memory, output_limit, runtime_error, unavailable
    seconds: float


def available() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if os.geteuid() != 0:
        return "the python grader sandbox needs the worker to run as root (to create namespaces)"
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"the python grader sandbox needs `{tool}` (util-linux)"
    return None


def _limits(limits: SandboxLimits) -> Any:
    def apply() -> None:
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        # Root ignores it; the grader's fresh uid is held to one process: itself.
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(limit)
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:500] if lines else ""


def run_python_grader(
    source: str, sample: dict[str, Any], item: dict[str, Any], limits: SandboxLimits
) -> SandboxResult:
    started = time.perf_counter()
    if (why := available()) is not None:
        return SandboxResult(None, why, "unavailable", 0.0)
    base = Path(tempfile.mkdtemp(prefix="tf-grader-"))
    work, root = base / "work", base / "root"
    work.mkdir()
    root.mkdir()
    uid = 100_000 + secrets.randbelow(2**30)  # a uid no other process runs as: NPROC counts only this one
    try:
        (work / "runner.py").write_text(RUNNER)
        (work / "grader.py").write_text(source)
        (work / "input.json").write_text(json.dumps({"sample": sample, "item": item}))
        os.chown(work, uid, uid)
        os.chmod(base, 0o711)
        prefix = os.path.realpath(sys.base_prefix)
        python = os.path.join(prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
        cmd = [
            "unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
            "/bin/sh", "-c", SETUP, "sandbox", str(root), str(work), prefix, str(uid), python,
        ]  # fmt: skip
        with (work / "stdout").open("wb") as out, (work / "stderr").open("wb") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env={}, cwd=str(work),
                preexec_fn=_limits(limits), start_new_session=True, close_fds=True,
            )  # fmt: skip
            try:
                code = proc.wait(timeout=limits.timeout_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return SandboxResult(
                    None, f"timed out after {limits.timeout_seconds:g}s (wall clock)", "timeout", _since(started)
                )
        return _result(code, work, limits, started)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _since(started: float) -> float:
    return time.perf_counter() - started


def _result(code: int, work: Path, limits: SandboxLimits, started: float) -> SandboxResult:
    stderr = _tail(work / "stderr", limits.output_bytes)
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL):
        return SandboxResult(None, f"used more than {limits.cpu_seconds}s of CPU", "cpu_time", _since(started))
    if code in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ) or "File too large" in stderr:
        return SandboxResult(None, f"wrote more than {limits.output_bytes} bytes", "output_limit", _since(started))
    if "MemoryError" in stderr:
        return SandboxResult(None, f"used more than {limits.memory_mb} MB of memory", "memory", _since(started))
    reward_file = work / "reward.json"
    if code != 0 or not reward_file.is_file():
        detail = stderr or f"exited with status {code}"
        return SandboxResult(None, detail, "runtime_error", _since(started))
    try:
        with reward_file.open("rb") as f:
            reward = float(json.loads(f.read(limits.output_bytes))["reward"])
    except (ValueError, KeyError, TypeError) as exc:
        return SandboxResult(None, f"unreadable reward: {exc}", "runtime_error", _since(started))
    return SandboxResult(reward, None, None, _since(started))

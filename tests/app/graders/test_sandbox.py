"""The python grader's sandbox, against real processes: a grader scores, and each escape the issue names
is refused (it scores nothing, with the reason): reading /etc/passwd, the data dir and the worker's
environment, connecting to PostgreSQL and Redis on 127.0.0.1, forking repeatedly, allocating 8 GB,
sleeping forever, writing outside its temp dir, and writing without bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tuneforge.contract.spec  # noqa: F401  (the spec before the graders: see graders/__init__.py)
from tuneforge.contract.graders.sandbox import SandboxLimits, available, run_python_grader

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

LIMITS = SandboxLimits(timeout_seconds=5, cpu_seconds=2, memory_mb=512, output_bytes=65_536)


def grade(body: str, limits: SandboxLimits = LIMITS) -> tuple[float | None, str | None, str | None]:
    source = "import os, socket, time\n\ndef grade(sample, item):\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )
    r = run_python_grader(source, {"output_text": "Paris"}, {"answer": "paris"}, limits)
    return r.reward, r.error_type, r.error


def test_a_grader_scores() -> None:
    assert grade("return float(sample['output_text'].lower() == item['answer'])") == (1.0, None, None)


def test_it_cannot_read_etc_passwd() -> None:
    reward, kind, error = grade("return len(open('/etc/passwd').read())")
    assert reward is None and kind == "runtime_error" and "No such file" in (error or "")


def test_it_cannot_read_the_data_dir(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("tenant data")
    secret.chmod(0o644)
    reward, _, error = grade(f"return len(open({str(secret)!r}).read())")
    assert reward is None and "No such file" in (error or "")


def test_it_sees_none_of_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEFORGE_DATABASE_URL", "postgresql://secret")
    reward, _, _ = grade("return float(any('TUNEFORGE' in k or 'secret' in v for k, v in os.environ.items()))")
    assert reward == 0.0
    reward, _, error = grade("return len(open('/proc/1/environ').read())")
    assert reward is None and "No such file" in (error or "")


@pytest.mark.parametrize("port", [5432, 6379])
def test_it_cannot_connect_to_postgres_or_redis(port: int) -> None:
    reward, kind, error = grade(f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\nreturn 1.0")
    assert reward is None and kind == "runtime_error" and "unreachable" in (error or "")


def test_it_cannot_fork() -> None:
    reward, _, error = grade("for _ in range(100):\n    os.fork()\nreturn 1.0")
    assert reward is None and "Resource temporarily unavailable" in (error or "")


def test_it_cannot_allocate_8_gb() -> None:
    reward, kind, _ = grade("x = bytearray(8 * 1024**3)\nreturn 1.0")
    assert reward is None and kind == "memory"


def test_sleeping_forever_times_out() -> None:
    reward, kind, _ = grade("time.sleep(10**6)\nreturn 1.0", SandboxLimits(timeout_seconds=2))
    assert reward is None and kind == "timeout"


def test_spinning_runs_out_of_cpu() -> None:
    reward, kind, _ = grade("while True:\n    pass", SandboxLimits(timeout_seconds=20, cpu_seconds=1))
    assert reward is None and kind == "cpu_time"


@pytest.mark.parametrize("path", ["/tmp/escape", "/usr/escape", "/escape", str(Path.cwd() / "escape")])
def test_it_cannot_write_outside_its_temp_dir(path: str) -> None:
    reward, _, error = grade(f"open({path!r}, 'w').write('x')\nreturn 1.0")
    assert reward is None and error is not None
    assert not os.path.exists(path)


def test_it_cannot_write_without_bound() -> None:
    reward, kind, _ = grade("open('big', 'w').write('x' * 10**7)\nreturn 1.0")
    assert reward is None and kind == "output_limit"

"""Helpers shared by the tests: real processes, uploads, keys and specs. (Fixtures stay in conftest.py;
pytest discourages importing conftest modules.)

Importing this module sets nothing; tests/conftest.py points the environment at the test database,
Redis and a temporary data dir before any Tuneforge module is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from tuneforge.contract.spec import JobSpec

# Under pytest-xdist (scripts/test.sh runs two workers) each worker process is a test session of its
# own: its own database (the pid is in its name), data dir, and Redis database, so that no worker
# ever sees another's jobs or queues.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_INDEX = int(XDIST_WORKER[2:]) if XDIST_WORKER.startswith("gw") else 0
PG_ADMIN_URL = os.environ.get("TUNEFORGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TUNEFORGE_TEST_REDIS", f"redis://127.0.0.1:6379/{11 + _WORKER_INDEX}")
TEST_DB = f"tuneforge_test_{os.getpid()}"
ROOT = Path(__file__).resolve().parents[1]
# One temporary directory per test session: the data dir, the models root and process logs. Kept in
# the environment (per xdist worker: workers inherit the controller's environment) so that a second
# import of this module finds the same one.
_TMP_VAR = "TUNEFORGE_TESTTMP" + (f"_{XDIST_WORKER}" if XDIST_WORKER else "")
TMP = Path(os.environ.get(_TMP_VAR) or tempfile.mkdtemp(prefix="tuneforge-tests-"))
os.environ[_TMP_VAR] = str(TMP)


def make_key(org: str, *, admin: bool = False) -> str:
    from tuneforge.app.auth.service import create_key, get_or_create_org
    from tuneforge.app.db.engine import session_scope

    with session_scope() as s:
        _, key = create_key(s, get_or_create_org(s, org), "test", admin=admin)
    return key


def upload_jsonl(
    client: httpx.Client | TestClient,
    rows: list[dict[str, Any]],
    name: str = "data.jsonl",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    r = client.post("/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def shakespeare_rows(n: int = 60, width: int = 300) -> list[dict[str, Any]]:
    from tests.tinymodels import corpus

    text = corpus()
    return [{"text": text[i * width : (i + 1) * width]} for i in range(n)]


def make_spec(**over: object) -> JobSpec:
    """A resolved spec for the tiny test model, with `over` as the request body's fields."""
    from tuneforge.app.jobs.request import JobCreate

    body = {"model": "tiny-llama", "training_file": "file-x", "seed": 3, **over}
    # Sample generations (on by default for causal_lm) cost seconds per evaluation on the tiny 4-bit
    # model and add events; engine tests get them only when they ask.
    if "samples" not in over and over.get("task", "causal_lm") == "causal_lm":
        body["samples"] = {"from_validation": 0}
    return JobCreate.model_validate(body).resolve()


# ----------------------------------------------------------------------------- real processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def spawn(
    args: list[str],
    env: dict[str, str] | None = None,
    log: Path | None = None,
    *,
    replace_env: bool = False,
    cwd: Path = ROOT,
    entry: tuple[str, ...] = (sys.executable, "-P", "-m", "tuneforge.app.cli"),
) -> subprocess.Popen[bytes]:
    """A `tuneforge` subprocess in its own session. `env` adds to this process's environment,
    or replaces it with `replace_env`. `entry` is how it is started: by default the module, with `-P` as
    every spawn of Tuneforge's own does, so that the working directory `cwd` cannot shadow its modules."""
    out = log.open("wb") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [*entry, *args],
        cwd=cwd,
        env=dict(env or {}) if replace_env else {**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class VLLMServer:
    """`tuneforge vllm --model <model>` from vLLM's own venv (scripts/vllm_env.sh), on a free port, with a
    small KV cache; `kill` SIGKILLs its whole process group (API server and engine), `start` starts it again."""

    def __init__(self, model: str, model_dir: Path, log: Path) -> None:
        self.model, self.model_dir, self.log = model, model_dir, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_s: list[float] = []

    def start(self, timeout: float = 900) -> None:
        t0 = time.monotonic()
        args = ["vllm", "--model", self.model, "--port", str(self.port), "--kv-cache-gb", "1"]
        args += ["--max-loras", "4", "--max-lora-rank", "16", "--max-model-len", "1024"]
        # vLLM 0.32 serves a named or `required` tool_choice only with a tool-call parser set (400 otherwise).
        args += ["--tool-call-parser", "hermes"]
        self.proc = spawn(args, log=self.log)
        try:
            wait_http(f"{self.url}/v1/models", self.proc, timeout=timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"vLLM did not start: {exc}\n{self.log.read_text()[-4000:]}") from exc
        self.started_s.append(time.monotonic() - t0)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_log() -> str:
    p = TMP / "worker.log"
    return p.read_text()[-5000:] if p.exists() else ""


TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
J = TypeVar("J")
R = TypeVar("R")


def answers_while(base_url: str, work: Callable[[], R]) -> R:
    """Run `work` (a request that costs the API seconds of CPU) while another client asks for /healthz
    every 50 ms, and check that the API kept answering: run on its event loop, the work would hold
    every request for about as long as it took. Returns what `work` returned."""
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base_url, timeout=60) as c:
            while not done.is_set():
                t = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t)
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    started = time.perf_counter()
    try:
        result = work()
    finally:
        took = time.perf_counter() - started
        done.set()
        poller.join()
    assert len(latencies) >= 5, (took, latencies)
    assert max(latencies) < max(0.5, took / 3), (took, max(latencies), statistics.median(latencies))
    return result


def job_progress(job: Any) -> tuple[str | None, int | None, int | None]:
    """A job's status, attempt and step, from the API's JSON or the openai SDK's object."""
    data = job if isinstance(job, dict) else {**(job.model_extra or {}), "status": job.status}
    return data.get("status"), data.get("attempt"), (data.get("progress") or {}).get("step")


def finished(job: Any) -> bool:
    return job_progress(job)[0] in TERMINAL


def wait_job(
    fetch: Callable[[], J],
    until: Callable[[J], bool] = finished,
    *,
    idle: float = 120,
    log: Callable[[], str] = worker_log,
    every: float = 0.3,
    retry_on: tuple[type[Exception], ...] = (),
) -> J:
    """Poll `fetch()` (a job, as JSON or an SDK object) until `until(job)`.

    The deadline follows progress: it restarts whenever the job's status, attempt or step changes,
    so a busy machine slows a test down instead of failing it. A job that does not move for `idle`
    seconds fails the test, with `log()` in the message. `retry_on`: errors that mean "ask again"
    (say, the API answering 503 while PostgreSQL restarts)."""
    deadline = time.monotonic() + idle
    seen: tuple[object, ...] | None = None
    job: Any = None
    while True:
        try:
            job = fetch()
        except retry_on:
            pass
        else:
            if until(job):
                return job
            if (now := job_progress(job)) != seen:
                seen, deadline = now, time.monotonic() + idle
        if time.monotonic() > deadline:
            raise AssertionError(f"no progress for {idle:.0f}s; job={job}\n{log()}")
        time.sleep(every)


def wait_sdk_job(sdk: Any, job_id: str, until: Callable[[Any], bool] = finished, **kw: Any) -> Any:
    """`wait_job` over the openai SDK's `fine_tuning.jobs.retrieve`."""
    return wait_job(lambda: sdk.fine_tuning.jobs.retrieve(job_id), until, **kw)


def wait_http_job(http: httpx.Client, job_id: str, until: Callable[[Any], bool] = finished, **kw: Any) -> Any:
    """`wait_job` over `GET /v1/fine_tuning/jobs/{id}` with a client whose base URL is the API's."""
    return wait_job(lambda: http.get(f"/v1/fine_tuning/jobs/{job_id}").json(), until, **kw)


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records each POST (body bytes, headers) and answers
    with the next status of `statuses` (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.received.append((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, n: int, timeout: float = 60) -> list[tuple[bytes, dict[str, str]]]:
        """Until `n` deliveries arrived, or none for `timeout` seconds (each one restarts the wait)."""
        deadline, count = time.monotonic() + timeout, 0
        while len(self.received) < n and time.monotonic() < deadline:
            if len(self.received) > count:
                count, deadline = len(self.received), time.monotonic() + timeout
            time.sleep(0.05)
        return list(self.received)


# ----------------------------------------------------------------------------- S3 (moto's server)

S3_BUCKET = "tuneforge-test"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3-compatible server as a real subprocess on a free port. Returns it and its URL."""
    port = free_port()
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/moto-api/", proc, timeout=60)
    return proc, url


def s3_env(endpoint: str, prefix: str, data_dir: Path) -> dict[str, str]:
    """What a `tuneforge` process needs to keep its artifacts in the test bucket."""
    return {
        **S3_CREDENTIALS,
        "TUNEFORGE_ARTIFACT_STORE": f"s3://{S3_BUCKET}/{prefix}",
        "TUNEFORGE_S3_ENDPOINT_URL": endpoint,
        "TUNEFORGE_DATA_DIR": str(data_dir),
        "TUNEFORGE_DATABASE_URL": os.environ["TUNEFORGE_DATABASE_URL"],
        "TUNEFORGE_BROKER_URL": os.environ["TUNEFORGE_BROKER_URL"],
        "TUNEFORGE_MODELS_DIR": os.environ["TUNEFORGE_MODELS_DIR"],
    }


class FaultyProxy:
    """A TCP proxy in front of a server that a test can break: `frozen` holds every byte (a hung
    connection), `down` drops every connection (an outage). A trigger switches mode when a byte
    string (say, a key in an HTTP request line) passes upstream."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "up"
        self.triggered = threading.Event()
        self._triggers: list[tuple[bytes, str, float | None]] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: str) -> None:
        self.mode = mode
        if mode == "down":
            with self._lock:
                conns, self._conns = self._conns, []
            for c in conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()

    def on(self, needle: bytes, mode: str, seconds: float | None = None) -> None:
        """Switch to `mode` when `needle` passes upstream; back to `up` after `seconds` if given."""
        self._triggers.append((needle, mode, seconds))

    def close(self) -> None:
        self.set("down")
        self.server.close()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.mode == "down":
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        import threading

        try:
            while data := src.recv(65536):
                if upstream:
                    for needle, mode, seconds in list(self._triggers):
                        if needle in data:
                            self._triggers.remove((needle, mode, seconds))
                            self.set(mode)
                            self.triggered.set()
                            if seconds:
                                threading.Timer(seconds, self.set, args=("up",)).start()
                while self.mode == "frozen":
                    time.sleep(0.05)
                if self.mode == "down":
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


# ----------------------------------------------------------------------------- data shapes


def weather_chat(i: int = 0) -> dict[str, Any]:
    """An OpenAI function-calling row: tools, an assistant tool call with null content, the tool's
    answer, and a first assistant turn with weight 0 (not trained on)."""
    call = {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
    return {
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": f"Is it warm in Rome today? ({i})"},
            {"role": "assistant", "content": "Hold on a moment.", "weight": 0},
            {"role": "user", "content": "Please check."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": "warm and sunny"},
            {"role": "assistant", "content": "It is warm and sunny."},
        ],
    }


def alpaca_row(i: int = 0) -> dict[str, Any]:
    return {"instruction": "Name the speaker.", "input": f"Line {i} of the play", "output": "The citizen speaks."}


def sharegpt_row(i: int = 0) -> dict[str, Any]:
    return {
        "conversations": [
            {"from": "system", "value": "You answer briefly."},
            {"from": "human", "value": f"Who speaks in line {i}?"},
            {"from": "gpt", "value": "The citizen speaks."},
        ]
    }


def plain_template_model(models_root: Path, name: str = "tiny-llama") -> str:
    """A copy of a tiny model whose chat template ignores `tools` and `tool_calls`. Returns its name."""
    import shutil

    from tuneforge.app.demo.tiny_model import PLAIN_CHAT_TEMPLATE

    plain = f"{name}-plain-template"
    dest = models_root / plain
    if not dest.exists():
        shutil.copytree(models_root / name, dest)
        (dest / "chat_template.jinja").write_text(PLAIN_CHAT_TEMPLATE)
    return plain


def preference_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Prefer a polite answer over a rude one, whatever the question."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a = rng.randint(1, 50)
        up, down = f"yes, {a} is fine, thank you", f"no, {a} is not, go away"
        rows.append(
            {
                "input": {"messages": [{"role": "user", "content": f"count on from {a}"}]},
                "preferred_output": [{"role": "assistant", "content": up}],
                "non_preferred_output": [{"role": "assistant", "content": down}],
            }
        )
    return rows


# ----------------------------------------------------------------------------- job rows and the outbox


def org_id_of(org: str) -> str:
    """The id of an organization, created if new (a fresh name gives a test its own webhooks)."""
    from tuneforge.app.auth.service import get_or_create_org
    from tuneforge.app.db.engine import session_scope

    with session_scope() as s:
        return get_or_create_org(s, org).id


def insert_job(org_id: str, status: str, **values: Any) -> str:
    """A job row written directly in `status` (no files, no model): the starting point of a
    transition under test. Returns its id."""
    from tuneforge.app.core.ids import new_id
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Job

    row: dict[str, Any] = {"model": "tiny", "spec": {}, "training_file": "file-none", "seed": 0, "result_files": []}
    job = Job(id=new_id("ftjob"), organization_id=org_id, status=status, **(row | values))
    with session_scope() as s:
        s.add(job)
    return job.id


def subscribe_all(org_id: str) -> str:
    """A webhook endpoint of the organization subscribed to every event type; no receiver listens
    (the tests read the outbox, not deliveries). Returns its id."""
    from tuneforge.app.core.ids import new_id
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import WebhookEndpoint
    from tuneforge.app.webhooks.events import WebhookEvent

    endpoint_id = new_id("wh")
    with session_scope() as s:
        s.add(
            WebhookEndpoint(
                id=endpoint_id,
                organization_id=org_id,
                url="http://127.0.0.1:9/unused",
                events=[e.value for e in WebhookEvent],
                secret="whsec_test",
            )
        )
    return endpoint_id


def outbox(endpoint_id: str) -> list[tuple[str, str]]:
    """(event type, the payload's `data.id`) of every delivery queued for an endpoint, oldest first."""
    from sqlalchemy import select

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import WebhookDelivery

    with session_scope() as s:
        rows = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id).order_by(WebhookDelivery.seq)
        )
        return [(d.type, d.payload["data"]["id"]) for d in rows]

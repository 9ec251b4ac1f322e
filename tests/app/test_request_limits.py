"""What an anonymous or hostile client may send, against the server docker-compose.yml starts (its `api`
command, run here with only the address changed) and against `tuneforge up`: header size, count and
read time are bounded in the HTTP server itself; specs hold finite numbers only; model names the
filesystem cannot hold and more metadata filters than a job has keys are 400s naming the field."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.helpers import ROOT, TMP, free_port, make_key, shakespeare_rows, spawn, stop, upload_jsonl, wait_http

HEADER_TIMEOUT = 1.5  # seconds, set for these servers (the default is 10)


def compose_api_command(port: int) -> list[str]:
    """docker-compose.yml's `api` command, bound to 127.0.0.1:<port> instead of 0.0.0.0:8000."""
    command = list(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]["command"])
    assert command[:2] == ["tuneforge", "api"], command
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    return command[1:]


@pytest.fixture(scope="module")
def server(tiny_model: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {"TUNEFORGE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)}
    proc = spawn(compose_api_command(port), env=env, log=TMP / "limits-api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(server: tuple[str, subprocess.Popen[bytes]]) -> httpx.Client:
    return httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {make_key('limits')}"}, timeout=60)


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _rss(proc: subprocess.Popen[bytes]) -> int:
    """The server's resident memory: uvicorn's supervisor and its worker processes."""
    parent = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


def test_compose_runs_the_same_server_as_the_cli() -> None:
    from tuneforge.app.cli import build_parser

    args = build_parser().parse_args(compose_api_command(8000))
    assert args.command == "api" and args.workers == 2  # one process per core, as in production
    # The limits compose sets for the published API are the settings' defaults, each a real setting.
    from tuneforge.app.core.config import Settings

    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]["environment"]
    for name in ("max_header_bytes", "max_headers", "header_timeout_seconds", "max_streams_per_org"):
        value = env[f"TUNEFORGE_{name.upper()}"]
        default = value.split(":-", 1)[1].rstrip("}")
        assert float(default) == Settings.model_fields[name].default, name


def test_an_oversized_header_is_a_431_and_the_server_does_not_buffer_it(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, proc = server
    with _connect(base) as sock:  # over the 32 KiB default, then silence: the answer comes at once
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 40_000)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "headers_too_large" and "TUNEFORGE_MAX_HEADER_BYTES" in body["error"]["message"]

    # The probe's 200 MB Authorization header: the server hangs up after the first few hundred KB,
    # and its memory does not grow by what was sent (it grew from 168 to 958 MB before).
    before = _rss(proc)
    sent = 0
    with _connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
        with pytest.raises(OSError):  # reset or broken pipe: the server closed the connection
            while sent < 200 * 1024 * 1024:
                sock.sendall(b"a" * (1024 * 1024))
                sent += 1024 * 1024
    assert sent < 16 * 1024 * 1024, sent
    assert _rss(proc) - before < 64 * 1024 * 1024, (_rss(proc) - before) / 2**20
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_too_many_headers_is_a_431(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, _ = server
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))  # 10 KB: under the size limit
    with _connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"TUNEFORGE_MAX_HEADERS" in answer


def test_ordinary_requests_are_untouched(server: tuple[str, subprocess.Popen[bytes]], http: httpx.Client) -> None:
    """90 headers and 20 KB of them pass; a body far larger than the header limit is not a header; a
    kept-alive connection's later requests are measured afresh."""
    headers = {f"x-h{i}": "v" * 200 for i in range(90)}
    assert httpx.get(f"{server[0]}/healthz", headers=headers).status_code == 200
    file = upload_jsonl(http, [{"text": f"line {i} " + "word " * 500} for i in range(500)])  # 1.25 MB
    assert file["bytes"] > 1_000_000
    for _ in range(50):
        assert http.get("/v1/fine_tuning/jobs", params={"limit": 1}).status_code == 200
    # A request's head in the same read as the previous request's body, then 100 KB of its own body:
    # the body is not taken for more of the head (it once was, and the connection was dropped).
    with _connect(server[0]) as sock:
        sock.sendall(
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n"
        )
        time.sleep(0.2)
        sock.sendall(b"b" * 100_000)
        answer = _answer(sock)
    assert answer.count(b"HTTP/1.1 405 ") == 2, answer[:300]  # both answered (GET-only route)


def test_slow_and_silent_clients_are_cut_off(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    """50 connections that never finish their headers: trickling ones get a 408, silent ones are
    closed, each after the header timeout; everyone else is served meanwhile."""
    base, _ = server
    results: dict[int, tuple[float, bytes]] = {}

    def client(i: int) -> None:
        t0 = time.monotonic()
        with _connect(base) as sock:
            answer = b""
            if i % 2:  # slowloris: a byte every 0.2 s, never the end of the head
                sock.settimeout(0.2)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                while True:
                    try:
                        sock.sendall(b"X")
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    answer += chunk
            else:
                answer = _answer(sock)
        results[i] = (time.monotonic() - t0, answer)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(50)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # served while they hang
    assert time.monotonic() - t0 < 1
    deadline = time.monotonic() + HEADER_TIMEOUT + 30  # one deadline for all of them
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 0))
    assert len(results) == 50, f"{50 - len(results)} connections still open"
    for i, (elapsed, answer) in results.items():
        assert HEADER_TIMEOUT - 0.2 <= elapsed < HEADER_TIMEOUT + 10, (i, elapsed)
        assert answer.startswith(b"HTTP/1.1 408 ") if i % 2 else answer == b"", (i, answer[:100])


def test_tuneforge_up_serves_with_the_same_limits(tmp_path: Path, tiny_model: str) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    shutil.copytree(Path(os.environ["TUNEFORGE_MODELS_DIR"]) / tiny_model, data_dir / "models" / "tiny")
    env = {k: v for k, v in os.environ.items() if k not in ("TUNEFORGE_DATABASE_URL", "TUNEFORGE_BROKER_URL")}
    env |= {"TUNEFORGE_DATA_DIR": str(data_dir), "TUNEFORGE_MODELS_DIR": str(data_dir / "models")}
    port = free_port()
    entry = (str(Path(sys.executable).with_name("tuneforge")),)
    proc = spawn(["up", "--port", str(port)], env=env, log=tmp_path / "up.log", replace_env=True, entry=entry)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc, timeout=120)
        with _connect(base) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 40_000)
            assert _answer(sock).startswith(b"HTTP/1.1 431 ")
        with _connect(base) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(500)) + b"\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 431 ")
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        stop(proc, timeout=60)


def _raw_post(http: httpx.Client, path: str, raw: str) -> httpx.Response:
    return http.post(path, content=raw, headers={"content-type": "application/json"})


def test_numbers_in_specs_are_finite(http: httpx.Client, tiny_model: str) -> None:
    """JSON's 1e999 parses to infinity and NaN to nan; each was accepted, and the job ran to nan_loss
    (or, for max_grad_norm, silently without clipping). Now each is a 400 naming its field."""
    file = upload_jsonl(http, shakespeare_rows(8))
    head = f'"model": "{tiny_model}", "training_file": "{file["id"]}"'
    cases = {
        "lora.alpha": '"lora": {"alpha": 1e999}',
        "optimizer.eps": '"optimizer": {"name": "adamw", "eps": 1e999}',
        "training.max_grad_norm": '"training": {"max_grad_norm": 1e999}',
        "training.loss_watchdog.max_ratio": '"training": {"loss_watchdog": {"max_ratio": 1e999}}',
        "scheduler.power": '"scheduler": {"name": "polynomial", "power": NaN}',
        "lora.dropout": '"lora": {"dropout": NaN}',
    }
    for param, block in cases.items():
        r = _raw_post(http, "/v1/fine_tuning/jobs", "{%s, %s}" % (head, block))  # noqa: UP031
        assert r.status_code == 400, (param, r.text)
        assert r.json()["error"]["param"] == param, (param, r.text)
        assert "finite" in r.json()["error"]["message"], r.text
    sweeps = {
        "search_space.lora.alpha": '"search_space": {"lora.alpha": {"values": [8, 1e999]}}',
        "search_space.training.learning_rate": '"search_space": {"training.learning_rate": {"values": [NaN]}}',
        "search_space.lora.dropout": '"search_space": {"lora.dropout": {"uniform": [0, 1e999]}}',
    }
    for param, block in sweeps.items():
        r = _raw_post(http, "/v1/fine_tuning/sweeps", "{%s, %s}" % (head, block))  # noqa: UP031
        assert r.status_code == 400, (param, r.text)
        assert r.json()["error"]["param"] == param, (param, r.text)


def test_model_names_the_filesystem_cannot_hold_are_4xx_naming_model(http: httpx.Client, tiny_model: str) -> None:
    """A 256-byte path component made stat() fail with ENAMETOOLONG: a 500 on job create."""
    file = upload_jsonl(http, shakespeare_rows(8))
    for name in ("a" * 256, f"org/{'b' * 256}", "é" * 128, f"ft:{'a' * 300}"):
        r = http.post("/v1/fine_tuning/jobs", json={"model": name, "training_file": file["id"]})
        assert r.status_code == 400, (name[:20], r.text)
        assert r.json()["error"]["param"] == "model", r.text
        chat = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
        r = http.post("/v1/chat/completions", json=chat)
        # Chat answers an unknown model with 404 model_not_found (as it always has for such names).
        assert r.status_code == 404 and r.json()["error"]["param"] == "model", (name[:20], r.text)


def test_more_metadata_filters_than_a_job_has_keys_is_a_400(http: httpx.Client) -> None:
    def filters(n: int) -> dict[str, Any]:
        return {f"metadata[k{i}]": "v" for i in range(n)}

    assert http.get("/v1/fine_tuning/jobs", params=filters(16)).status_code == 200
    for n in (17, 1000):
        r = http.get("/v1/fine_tuning/jobs", params=filters(n))
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"]["param"] == "metadata" and r.json()["error"]["code"] == "too_many_filters"

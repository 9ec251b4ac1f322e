"""Every log line of a request carries its request id; no log line carries a key or a password."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest

from tuneforge.app.core.logging import configure_logging, redact


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO")
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_every_line_of_a_request_names_its_id_and_the_key_by_id(
    client: httpx.Client, api_key: str, tiny_model: str, log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneforge.app.jobs import dispatch

    def broker_down(job_id: str) -> None:
        raise ConnectionError("redis://:hunter2@broker:6379/0 refused")

    monkeypatch.setattr(dispatch, "publish", broker_down)  # makes the route log a warning
    from tests.helpers import shakespeare_rows, upload_jsonl

    file_id = upload_jsonl(client, shakespeare_rows(4))["id"]
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers={"x-request-id": "req-audit-42"},
        json={"model": tiny_model, "training_file": file_id, "training": {"max_steps": 1}},
    )
    assert r.headers["x-request-id"] == "req-audit-42"
    bad = client.get("/v1/files", headers={"Authorization": "Bearer tf-wrongwrongwrongwrongwrongwrong"})
    assert bad.status_code == 401

    lines = [line for line in log_stream.getvalue().splitlines() if line.strip()]
    ours = [line for line in lines if "[req-audit-42]" in line]
    assert len(ours) >= 2, lines  # the publish warning and the access line
    assert any("could not publish" in line for line in ours)
    assert any("POST /v1/fine_tuning/jobs -> " in line and " key=key-" in line for line in ours)
    assert all("[-]" not in line for line in lines if "tuneforge.access" in line)
    text = log_stream.getvalue()
    assert api_key not in text and "tf-wrongwrong" not in text and "hunter2" not in text


def test_a_hostile_request_id_is_replaced(client: httpx.Client) -> None:
    r = client.get("/healthz", headers={"x-request-id": "x" * 65})
    assert r.headers["x-request-id"].startswith("req_")
    r = client.get("/healthz", headers={"x-request-id": "abc\tINFO forged"})
    assert r.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connecting to postgresql+psycopg://tuneforge:s3cr%40t@db:5432/tf", "s3cr%40t"),
        ("broker redis://:pw-123@redis:6379/0 down", "pw-123"),
        ("header Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("key tf-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 used", "AbCdEfGhIjKlMnOp"),
    ],
)
def test_redact_masks_credentials(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "***" in redact(text)

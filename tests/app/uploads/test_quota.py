"""The per-organization storage quota (files plus pending uploads), against a `tuneforge api` of its own
started with a 0.05 GB quota: refused at upload creation, at a part beyond what was reserved, and at
`POST /v1/files`, each a 413 naming the setting; freed by a cancel or a delete."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.app.uploads.common import MiB, add_part, chat_jsonl, complete, create, error
from tests.helpers import TMP, free_port, make_key, spawn, stop, wait_http

QUOTA_GB = 0.05
LIMIT = int(QUOTA_GB * (1 << 30))


@pytest.fixture(scope="module")
def quota_api() -> Iterator[str]:
    port = free_port()
    env = {"TUNEFORGE_ORG_STORAGE_QUOTA_GB": str(QUOTA_GB)}
    proc = spawn(["api", "--port", str(port)], env=env, log=TMP / "uploads-quota-api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture
def http(quota_api: str) -> Iterator[httpx.Client]:
    """A fresh organization per test: each starts with nothing stored."""
    headers = {"Authorization": f"Bearer {make_key(f'quota-{uuid.uuid4().hex[:8]}')}"}
    with httpx.Client(base_url=quota_api, headers=headers, timeout=120) as c:
        yield c


def over_quota(r: httpx.Response, param: str) -> None:
    err = error(r, 413)
    assert (err["param"], err["code"], err["type"]) == (param, "storage_quota_exceeded", "invalid_request_error")
    assert "TUNEFORGE_ORG_STORAGE_QUOTA_GB" in err["message"] and f"{QUOTA_GB:g} GB" in err["message"]


def upload_file(http: httpx.Client, data: bytes) -> httpx.Response:
    return http.post("/v1/files", files={"file": ("d.jsonl", data)}, data={"purpose": "fine-tune"})


def test_an_upload_declaring_more_than_the_quota_is_refused_at_creation(http: httpx.Client) -> None:
    body = {"filename": "t.jsonl", "purpose": "fine-tune", "bytes": LIMIT + 1, "mime_type": "text/jsonl"}
    over_quota(http.post("/v1/uploads", json=body), "bytes")
    assert create(http, LIMIT)["status"] == "pending"  # exactly the quota fits


def test_files_and_pending_uploads_share_the_quota(http: httpx.Client) -> None:
    big = create(http, 40 * MiB)  # reserved from now on, before any part arrives
    body = {"filename": "t.jsonl", "purpose": "fine-tune", "bytes": 20 * MiB, "mime_type": "text/jsonl"}
    over_quota(http.post("/v1/uploads", json=body), "bytes")
    data = chat_jsonl(12 * MiB)
    over_quota(upload_file(http, data), "file")
    assert http.get("/v1/files").json()["data"] == []  # the refused file was not kept
    # Cancelling frees the reservation; then both fit.
    assert http.post(f"/v1/uploads/{big['id']}/cancel").status_code == 200
    r = upload_file(http, data)
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    second = create(http, 20 * MiB)
    used = len(data) + 20 * MiB

    # Parts beyond an upload's declared bytes (a part sent twice) count for what they add.
    create(http, LIMIT - used - 2500)  # leaves 2,500 bytes
    small = create(http, 1000)  # leaves 1,500
    first = add_part(http, small["id"], b"a" * 1000)["id"]
    add_part(http, small["id"], b"a" * 1000)  # 1,000 over its reservation: leaves 500
    r = http.post(f"/v1/uploads/{small['id']}/parts", files={"data": ("blob", b"a" * 1000)})
    over_quota(r, "data")
    err = error(complete(http, small["id"], [first]), 400)  # `a` x 1000 is no dataset, but the upload works
    assert err["code"] == "invalid_file"

    # Deleting a file frees its bytes.
    over_quota(http.post("/v1/uploads", json={**body, "bytes": MiB}), "bytes")
    assert http.delete(f"/v1/files/{file_id}").status_code == 200
    assert create(http, MiB)["status"] == "pending"
    assert second["status"] == "pending"

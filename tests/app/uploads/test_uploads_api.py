"""`/v1/uploads` against the live API (a real uvicorn on PostgreSQL, parts in the local store): the
official SDK's `upload_file_chunked`, parts in any order, every error naming its field, cancel,
expiry, and other organizations."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.app.uploads.common import (
    MiB,
    add_part,
    backdate,
    chat_jsonl,
    complete,
    create,
    error,
    md5,
    row,
    split,
)
from tests.helpers import answers_while, make_key

PARTS_DIR = Path(os.environ["TUNEFORGE_DATA_DIR"]) / "uploads"


@pytest.fixture(scope="module")
def key() -> str:
    return make_key("uploads-api")


@pytest.fixture
def http(live_api: str, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def client(live_api: str, key: str) -> OpenAI:
    return OpenAI(base_url=f"{live_api}/v1", api_key=key, max_retries=0, timeout=120)


def test_the_sdks_upload_file_chunked_makes_a_file_a_job_accepts(
    client: OpenAI, http: httpx.Client, tiny_model: str, tmp_path: Path
) -> None:
    data = chat_jsonl(3 * MiB)
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    upload = client.uploads.upload_file_chunked(
        file=path, mime_type="text/jsonl", purpose="fine-tune", part_size=256 * 1024, md5=md5(data)
    )
    assert upload.status == "completed" and upload.object == "upload"
    assert upload.bytes == len(data) and upload.filename == "train.jsonl" and upload.purpose == "fine-tune"
    assert upload.file is not None and upload.file.bytes == len(data)
    # An ordinary file: the same object, content and validation report as `POST /v1/files` gives.
    f = client.files.retrieve(upload.file.id)
    assert f.status == "processed" and f.filename == "train.jsonl"
    assert client.files.content(f.id).content == data
    meta = http.get(f"/v1/files/{f.id}").json()
    assert meta["n_rows"] == data.count(b"\n") and meta["data_format"] == "messages" and meta["format"] == "jsonl"
    # ... which a fine-tuning job accepts (validated at submission; it need not train here).
    job = client.fine_tuning.jobs.create(
        model=tiny_model, training_file=f.id, extra_body={"training": {"max_steps": 1}}
    )
    assert job.status == "queued" and job.training_file == f.id
    client.fine_tuning.jobs.cancel(job.id)
    # The parts are gone once the file exists.
    assert not (PARTS_DIR / upload.id).exists()
    assert row(upload.id)["parts_removed"] is True


def test_parts_may_arrive_in_any_order_and_complete_names_it(http: httpx.Client) -> None:
    data = chat_jsonl(600_000)
    pieces = split(data, [200_000, 1, 150_000])  # a one-byte part is a part too
    up = create(http, len(data))
    assert up["status"] == "pending" and up["expires_at"] - up["created_at"] == 3600 and up["file"] is None
    ids = {i: add_part(http, up["id"], pieces[i])["id"] for i in reversed(range(len(pieces)))}
    part = add_part(http, up["id"], b"x")  # a stray part, not listed: left out and removed
    assert part["object"] == "upload.part" and part["upload_id"] == up["id"] and part["created_at"] > 0
    r = complete(http, up["id"], [ids[i] for i in range(len(pieces))])
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "completed" and done["file"]["bytes"] == len(data)
    assert http.get(f"/v1/files/{done['file']['id']}/content").content == data
    assert not (PARTS_DIR / up["id"]).exists()


def test_a_wrong_order_is_refused_and_the_upload_can_still_complete(http: httpx.Client) -> None:
    data = chat_jsonl(300_000)
    first, second = split(data, [100_001])  # cut mid-line
    up = create(http, len(data))
    a, b = add_part(http, up["id"], first)["id"], add_part(http, up["id"], second)["id"]
    err = error(complete(http, up["id"], [b, a], md5=md5(data)), 400)
    assert err["param"] == "md5" and err["code"] == "md5_mismatch" and "order of part_ids" in err["message"]
    err = error(complete(http, up["id"], [b, a]), 400)
    assert err["param"] == "part_ids" and err["code"] == "invalid_file" and "line 1" in err["message"]
    r = complete(http, up["id"], [a, b], md5=md5(data).upper())
    assert r.status_code == 200, r.text
    assert http.get(f"/v1/files/{r.json()['file']['id']}/content").content == data


def test_complete_names_what_is_wrong_with_part_ids(http: httpx.Client) -> None:
    data = chat_jsonl(50_000)
    first, second = split(data, [20_000])
    up = create(http, len(data))
    a, b = add_part(http, up["id"], first)["id"], add_part(http, up["id"], second)["id"]
    other = create(http, 10)
    foreign = add_part(http, other["id"], b"0123456789")["id"]
    cases = [
        ([a, "part-doesnotexist"], "part_ids[1]", "part_not_found"),
        ([a, foreign], "part_ids[1]", "part_not_found"),  # another upload's part
        ([a, a, b], "part_ids[1]", "duplicate_part"),
        ([a], "part_ids", "bytes_mismatch"),  # sizes do not add up to `bytes`
    ]
    for part_ids, param, code in cases:
        err = error(complete(http, up["id"], part_ids), 400)
        assert (err["param"], err["code"]) == (param, code), err
    assert (
        "hold 20000 bytes; the upload was created with bytes=" in error(complete(http, up["id"], [a]), 400)["message"]
    )
    assert error(complete(http, up["id"], []), 400)["param"] == "part_ids"
    assert error(complete(http, up["id"], [a, b], md5="not-an-md5"), 400)["param"] == "md5"
    r = http.post(f"/v1/uploads/{up['id']}/complete", json={"part_ids": [a, b], "order": "asc"})
    assert error(r, 400)["param"] == "order"  # unknown fields are refused
    assert complete(http, up["id"], [a, b]).status_code == 200  # none of that changed the upload


def test_completing_twice_and_other_moves_after_the_end_are_409(http: httpx.Client) -> None:
    data = chat_jsonl(10_000)
    up = create(http, len(data))
    p = add_part(http, up["id"], data)["id"]
    assert complete(http, up["id"], [p]).status_code == 200
    err = error(complete(http, up["id"], [p]), 409)
    assert err["param"] == "upload_id" and err["code"] == "upload_already_completed"
    assert error(http.post(f"/v1/uploads/{up['id']}/cancel"), 409)["code"] == "upload_already_completed"
    r = http.post(f"/v1/uploads/{up['id']}/parts", files={"data": ("blob", b"more")})
    assert error(r, 409)["code"] == "upload_already_completed"


def test_cancel_removes_the_parts_and_is_final(http: httpx.Client) -> None:
    up = create(http, 1000)
    p = add_part(http, up["id"], b"a" * 400)["id"]
    assert (PARTS_DIR / up["id"] / p).stat().st_size == 400
    r = http.post(f"/v1/uploads/{up['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert not (PARTS_DIR / up["id"]).exists()
    assert row(up["id"])["parts_removed"] is True
    again = http.post(f"/v1/uploads/{up['id']}/cancel")  # idempotent, so a retried cancel is fine
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    r = http.post(f"/v1/uploads/{up['id']}/parts", files={"data": ("blob", b"a" * 600)})
    assert error(r, 409)["code"] == "upload_cancelled"
    err = error(complete(http, up["id"], [p]), 409)
    assert err["code"] == "upload_cancelled" and err["param"] == "upload_id"


def test_an_expired_upload_takes_nothing_more_and_its_parts_are_swept(http: httpx.Client) -> None:
    from tuneforge.app.core.config import get_settings
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.uploads.service import sweep_once

    data = chat_jsonl(5000)
    up = create(http, len(data))
    p = add_part(http, up["id"], data)["id"]
    backdate(up["id"])
    r = http.post(f"/v1/uploads/{up['id']}/parts", files={"data": ("blob", b"x")})
    err = error(r, 409)
    assert err["code"] == "upload_expired" and "TUNEFORGE_UPLOAD_EXPIRES_SECONDS" in err["message"]
    assert error(complete(http, up["id"], [p]), 409)["code"] == "upload_expired"
    assert error(http.post(f"/v1/uploads/{up['id']}/cancel"), 409)["code"] == "upload_expired"
    # The sweeper (a thread in every API process; here one round of it, on the same database and
    # store) marks it and removes its parts.
    assert (PARTS_DIR / up["id"] / p).exists()
    with session_scope() as s:
        counts = sweep_once(s, get_settings())
    assert counts["expired"] >= 1
    assert row(up["id"]) == {"status": "expired", "parts_removed": True, "received_bytes": len(data)}
    assert not (PARTS_DIR / up["id"]).exists()


def test_another_organizations_upload_is_a_404_like_a_missing_one(http: httpx.Client, live_api: str) -> None:
    up = create(http, 100)
    p = add_part(http, up["id"], b"z" * 100)["id"]
    with httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {make_key('uploads-other')}"}) as other:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("parts", {"files": {"data": ("blob", b"z")}}),
            ("complete", {"json": {"part_ids": [p]}}),
            ("cancel", {}),
        ]
        for suffix, kw in calls:
            theirs = error(other.post(f"/v1/uploads/{up['id']}/{suffix}", **kw), 404)
            missing = error(other.post(f"/v1/uploads/upload-doesnotexist/{suffix}", **kw), 404)
            assert theirs["code"] == missing["code"] == "upload_not_found"
            assert theirs["message"].replace(up["id"], "X") == missing["message"].replace("upload-doesnotexist", "X")
    assert row(up["id"])["status"] == "pending" and row(up["id"])["received_bytes"] == 100  # untouched


def test_create_names_the_field(http: httpx.Client) -> None:
    base = {"filename": "t.jsonl", "purpose": "fine-tune", "bytes": 10, "mime_type": "text/jsonl"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"bytes": 0}, "bytes", "invalid_spec"),
        ({"bytes": 9 << 30}, "bytes", "upload_too_large"),
        ({"purpose": "batch"}, "purpose", "invalid_spec"),
        ({"mime_type": "application/pdf"}, "mime_type", "invalid_mime_type"),
        ({"filename": ""}, "filename", "invalid_spec"),
        ({"expires_after": {"anchor": "created_at", "seconds": 3600}}, "expires_after", "invalid_spec"),
    ]
    for over, param, code in cases:
        err = error(http.post("/v1/uploads", json={**base, **over}), 400)
        assert (err["param"], err["code"]) == (param, code), err
    assert (
        "TUNEFORGE_MAX_MULTIPART_UPLOAD_GB"
        in error(http.post("/v1/uploads", json={**base, "bytes": 9 << 30}), 400)["message"]
    )
    # The client's filename is data, never a path.
    assert (
        create(http, 10, filename="../../etc/passwd", mime_type="application/jsonl; charset=utf-8")["filename"]
        == "passwd"
    )


def test_a_part_must_be_a_non_empty_data_file(http: httpx.Client) -> None:
    up = create(http, 10)
    r = http.post(f"/v1/uploads/{up['id']}/parts", files={"data": ("blob", b"")})
    assert (error(r, 400)["param"], error(r, 400)["code"]) == ("data", "empty_part")
    r = http.post(f"/v1/uploads/{up['id']}/parts", files={"other": ("blob", b"abc")})
    assert error(r, 400)["param"] == "data"
    r = http.post(f"/v1/uploads/{up['id']}/parts", content=b"abc", headers={"Content-Type": "text/plain"})
    assert error(r, 400)["param"] == "data"
    assert row(up["id"])["received_bytes"] == 0


def _raw_post(base_url: str, path: str, key: str, length: int) -> bytes:
    """Send only the headers of a POST that declares `length` body bytes; return the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {length}\r\n\r\n"
        )
        s.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _content_length(answer):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def _content_length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_size_limits_are_refused_before_the_body_is_read(http: httpx.Client, live_api: str, key: str) -> None:
    # POST /v1/files takes up to OpenAI's 512 MB by default...
    answer = _raw_post(live_api, "/v1/files", key, 600 << 20)
    assert answer.startswith(b"HTTP/1.1 413") and b"limit of 512 MB" in answer, answer[:300]
    # ...and a part up to 64 MB.
    up = create(http, 10)
    answer = _raw_post(live_api, f"/v1/uploads/{up['id']}/parts", key, 65 << 20)
    assert answer.startswith(b"HTTP/1.1 413") and b"limit of 64 MB" in answer and b'"param":"data"' in answer


def test_completing_a_large_upload_does_not_hold_up_other_requests(http: httpx.Client) -> None:
    """Validation runs in a worker thread: while a 24 MB upload is assembled and parsed (seconds of CPU),
    the same API process keeps answering within a fraction of that time."""
    data = chat_jsonl(24 * MiB)
    up = create(http, len(data))
    ids = [add_part(http, up["id"], piece)["id"] for piece in split(data, [8 * MiB, 8 * MiB])]
    r = answers_while(str(http.base_url), lambda: complete(http, up["id"], ids, md5=md5(data)))
    assert r.status_code == 200, r.text

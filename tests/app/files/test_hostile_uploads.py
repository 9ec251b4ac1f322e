"""Uploads a hostile tenant could send to break or bloat the API: every one is a 400 naming its line
(nesting 5,000 deep was a 500 RecursionError, a 5,000-digit integer a 500 ValueError, a lone surrogate
passed and failed the job later with "internal error (TypeError)"), and a file's column summaries are
bounded (900,000 distinct keys took the API to 1.2 GB and every GET /v1/files to 88 MB)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.app.uploads.common import chat_jsonl
from tests.helpers import answers_while, make_key, upload_jsonl
from tuneforge.app.files.parsing import MAX_COLUMNS, MAX_DEPTH

LONE = '{"messages": [{"role": "user", "content": "hi \\udfff"}, {"role": "assistant", "content": "x"}]}'
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _upload(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/v1/files", files={"file": ("d.jsonl", body)}, data={"purpose": "fine-tune"})


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"text": ' + "[" * 5000 + "]" * 5000 + "}", f"nested more than {MAX_DEPTH} levels"),
        ('{"text": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}", f"nested more than {MAX_DEPTH} levels"),
        ('{"text": "a", "n": ' + "7" * 5000 + "}", "4300 digits"),
        (LONE, "surrogate"),
        ('{"text": "x", "\\ud800": 1}', "surrogate"),
    ],
    ids=["deep-5000", "deep-65", "5000-digit-int", "lone-surrogate-in-chat", "lone-surrogate-in-a-key"],
)
def test_hostile_lines_are_a_400_naming_the_line(client: httpx.Client, line: str, says: str) -> None:
    body = (json.dumps(CHAT) + "\n" + line + "\n").encode()
    r = _upload(client, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "file" and "line 2" in err["message"] and says in err["message"], err


def test_surrogate_pairs_and_escaped_backslashes_are_fine(client: httpx.Client) -> None:
    rows: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": "smile \U0001f600"}, {"role": "assistant", "content": "\\udfff"}]},
        {"text": "a", "nested": [[[[{"deep": [1, 2, 3]}]]]]},
    ]
    body = "\n".join(json.dumps(r) for r in rows).encode()  # ensure_ascii: the emoji as an escaped pair
    assert b"\\ud83d\\ude00" in body
    assert _upload(client, body).status_code == 200


def test_distinct_keys_are_capped_and_summaries_stay_small(client: httpx.Client) -> None:
    many = "".join(json.dumps({"text": "t", f"k{i}": i}) + "\n" for i in range(5000)).encode()
    r = _upload(client, many)
    assert r.status_code == 400, r.text
    assert f"line {MAX_COLUMNS}: more than {MAX_COLUMNS} distinct fields" in r.json()["error"]["message"]
    long_name = (json.dumps({"text": "t", "x" * 300: 1}) + "\n").encode()
    assert "field name longer than" in _upload(client, long_name).json()["error"]["message"]
    # At the cap, the file is taken and its summary is bounded by the cap, not by the data.
    fits = "".join(json.dumps({"text": "t", f"k{i}": "v" * 1000}) + "\n" for i in range(MAX_COLUMNS - 1)).encode()
    stored = upload_jsonl(client, [json.loads(x) for x in fits.splitlines()])
    assert len(stored["columns"]) == MAX_COLUMNS
    assert len(json.dumps(stored)) < 100 * MAX_COLUMNS


def test_uploads_in_flight_are_capped_per_organization(live_api: str) -> None:
    """Four uploads of one organization whose bodies are still arriving hold its four slots
    (TUNEFORGE_MAX_UPLOADS_PER_ORG): one more is a 429 with Retry-After before its body is read, another
    organization's upload goes through, and once they finish the organization may upload again."""
    import redis

    from tests.helpers import REDIS_URL, org_id_of
    from tuneforge.app.core.limits import InFlightKind, slot_key

    hostile = {"Authorization": f"Bearer {make_key('uploads-flood')}"}
    other = {"Authorization": f"Bearer {make_key('uploads-other')}"}
    slots = slot_key(InFlightKind.UPLOAD, org_id_of("uploads-flood"))
    release = threading.Event()
    boundary = "tfboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.jsonl"\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def slow_body() -> Iterator[bytes]:
        yield head + json.dumps({"text": "a"}).encode() + b"\n"
        release.wait(60)  # the request stays in flight, its body unfinished, until released
        yield json.dumps({"text": "b"}).encode() + tail

    def slow_upload(_: int) -> httpx.Response:
        return httpx.post(
            f"{live_api}/v1/files",
            content=slow_body(),
            headers={**hostile, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=90,
        )

    def upload(headers: dict[str, str]) -> httpx.Response:
        body = {"file": ("d.jsonl", b'{"text": "c"}\n')}
        return httpx.post(f"{live_api}/v1/files", files=body, data={"purpose": "fine-tune"}, headers=headers)

    with ThreadPoolExecutor(4) as pool:
        held = [pool.submit(slow_upload, i) for i in range(4)]
        try:
            # Progress: the server's own count of the organization's upload slots (in Redis).
            counter, deadline = redis.Redis.from_url(REDIS_URL), time.monotonic() + 60
            while counter.zcard(slots) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            over = upload(hostile)
            assert over.status_code == 429, over.text
            assert over.json()["error"]["code"] == "too_many_requests_in_flight"
            assert "TUNEFORGE_MAX_UPLOADS_PER_ORG" in over.json()["error"]["message"]
            assert int(over.headers["retry-after"]) >= 1
            assert upload(other).status_code == 200  # another organization is not affected
        finally:
            release.set()
        assert [f.result().status_code for f in held] == [200] * 4
    assert upload(hostile).status_code == 200


def test_health_answers_while_a_large_upload_validates(live_api: str) -> None:
    """POST /v1/files validates in a worker thread: while a 24 MB file is spooled, hashed and parsed,
    the same API process keeps answering (a 99 MB upload once held /healthz for 7 to 35 s)."""
    data = chat_jsonl(24 << 20)
    headers = {"Authorization": f"Bearer {make_key('uploads-large')}"}
    r = answers_while(
        live_api,
        lambda: httpx.post(
            f"{live_api}/v1/files",
            files={"file": ("big.jsonl", data)},
            data={"purpose": "fine-tune"},
            headers=headers,
            timeout=300,
        ),
    )
    assert r.status_code == 200, r.text

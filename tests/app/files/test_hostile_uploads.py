"""Uploads a hostile tenant could send to break or bloat the API: every one is a 400 naming its line
(nesting 5,000 deep was a 500 RecursionError, a 5,000-digit integer a 500 ValueError, a lone surrogate
passed and failed the job later with "internal error (TypeError)"), and a file's column summaries are
bounded (900,000 distinct keys took the API to 1.2 GB and every GET /v1/files to 88 MB)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers import upload_jsonl
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

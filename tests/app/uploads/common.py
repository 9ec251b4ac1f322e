"""What the uploads tests share: generated chat data, raw HTTP calls in OpenAI's shapes, and direct
looks at the database and the store (real ones, the same the live API uses)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import httpx

MiB = 1 << 20


def chat_row(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You answer in one line."},
            {"role": "user", "content": f"Question {i}: " + "why " * (i % 37)},
            {"role": "assistant", "content": f"Answer {i}: " + "because " * (i % 41)},
        ]
    }


def chat_jsonl(n_bytes: int, start: int = 0) -> bytes:
    """Chat rows (OpenAI's `messages`) adding up to at least `n_bytes`."""
    lines, size, i = [], 0, start
    while size < n_bytes:
        line = json.dumps(chat_row(i)).encode() + b"\n"
        lines.append(line)
        size += len(line)
        i += 1
    return b"".join(lines)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into parts of `sizes` (the last part takes the rest)."""
    parts, pos = [], 0
    for size in sizes:
        parts.append(data[pos : pos + size])
        pos += size
    parts.append(data[pos:])
    return [p for p in parts if p]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def create(http: httpx.Client, n_bytes: int, **over: Any) -> dict[str, Any]:
    body = {"filename": "train.jsonl", "purpose": "fine-tune", "bytes": n_bytes, "mime_type": "text/jsonl", **over}
    r = http.post("/v1/uploads", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def add_part(http: httpx.Client, upload_id: str, data: bytes) -> dict[str, Any]:
    r = http.post(f"/v1/uploads/{upload_id}/parts", files={"data": ("blob", data)})
    assert r.status_code == 200, r.text
    return dict(r.json())


def complete(http: httpx.Client, upload_id: str, part_ids: list[str], md5: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"part_ids": part_ids}
    if md5 is not None:
        body["md5"] = md5
    return http.post(f"/v1/uploads/{upload_id}/complete", json=body)


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return dict(r.json()["error"])


def backdate(upload_id: str, seconds: float = 60) -> None:
    """Make an upload's expiry `seconds` ago, as if its hour had passed."""
    from sqlalchemy import update

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Upload

    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    with session_scope() as s:
        s.execute(update(Upload).where(Upload.id == upload_id).values(expires_at=when))


def row(upload_id: str) -> dict[str, Any]:
    from sqlalchemy import select

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Upload

    with session_scope() as s:
        u = s.scalars(select(Upload).where(Upload.id == upload_id)).one()
        return {"status": str(u.status), "parts_removed": u.parts_removed, "received_bytes": u.received_bytes}

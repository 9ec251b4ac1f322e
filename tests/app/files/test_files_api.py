from __future__ import annotations

import json

import httpx

from tests.helpers import upload_jsonl
from tuneforge.app.core.config import Settings


def test_upload_list_get_content_delete(client: httpx.Client) -> None:
    f = upload_jsonl(client, [{"text": "hello"}, {"text": "world"}], name="../../etc/passwd.jsonl")
    assert f["object"] == "file"
    assert f["status"] == "processed"
    assert f["n_rows"] == 2
    assert f["filename"] == "passwd.jsonl"  # the client's path never becomes ours
    assert len(f["sha256"]) == 64

    got = client.get(f"/v1/files/{f['id']}").json()
    assert got == f
    content = client.get(f"/v1/files/{f['id']}/content")
    assert content.status_code == 200
    assert [json.loads(x) for x in content.text.splitlines()] == [{"text": "hello"}, {"text": "world"}]

    listed = client.get("/v1/files", params={"limit": 1000}).json()
    assert f["id"] in [x["id"] for x in listed["data"]]

    assert client.delete(f"/v1/files/{f['id']}").json() == {"id": f["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{f['id']}").status_code == 404


def test_paging_with_after(client: httpx.Client) -> None:
    ids = [upload_jsonl(client, [{"text": f"row {i}"}])["id"] for i in range(3)]
    first = client.get("/v1/files", params={"limit": 2}).json()
    assert first["has_more"] is True
    assert [x["id"] for x in first["data"]] == ids[::-1][:2]
    second = client.get("/v1/files", params={"limit": 2, "after": first["data"][-1]["id"]}).json()
    assert second["data"][0]["id"] == ids[0]


def test_broken_jsonl_names_the_line(client: httpx.Client) -> None:
    body = b'{"text": "ok"}\n{"text": "ok"}\n{"text": broken}\n'
    r = client.post("/v1/files", files={"file": ("d.jsonl", body)}, data={"purpose": "fine-tune"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "file"
    assert err["code"] == "invalid_file"
    assert "line 3: invalid JSON" in err["message"]


def test_binary_upload_is_refused(client: httpx.Client) -> None:
    r = client.post("/v1/files", files={"file": ("x.jsonl", bytes(range(256)) * 10)}, data={"purpose": "fine-tune"})
    assert r.status_code == 400
    assert "not" in r.json()["error"]["message"]


def test_oversized_upload_is_413(client: httpx.Client, settings: Settings) -> None:
    old = settings.max_upload_mb
    settings.max_upload_mb = 1
    try:
        big = b'{"text": "' + b"a" * (2 << 20) + b'"}\n'
        r = client.post("/v1/files", files={"file": ("big.jsonl", big)}, data={"purpose": "fine-tune"})
    finally:
        settings.max_upload_mb = old
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "file_too_large"


def test_bad_purpose_and_missing_parts(client: httpx.Client) -> None:
    r = client.post("/v1/files", files={"file": ("d.jsonl", b'{"text": "a"}\n')}, data={"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = client.post("/v1/files", data={"purpose": "fine-tune"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = client.post("/v1/files", content=b"not multipart", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_other_tenant_gets_404(client: httpx.Client, other_key: str) -> None:
    f = upload_jsonl(client, [{"text": "secret"}])
    other = {"Authorization": f"Bearer {other_key}"}
    assert client.get(f"/v1/files/{f['id']}", headers=other).status_code == 404
    assert client.get(f"/v1/files/{f['id']}/content", headers=other).status_code == 404
    assert client.delete(f"/v1/files/{f['id']}", headers=other).status_code == 404
    assert f["id"] not in [x["id"] for x in client.get("/v1/files", headers=other).json()["data"]]


def test_missing_or_bad_key_is_401(client: httpx.Client) -> None:
    assert client.get("/v1/files", headers={"Authorization": ""}).status_code == 401
    r = client.get("/v1/files", headers={"Authorization": "Bearer tf-nope"})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_upload_idempotency(client: httpx.Client) -> None:
    files = {"file": ("d.jsonl", b'{"text": "a"}\n')}
    h = {"Idempotency-Key": "upload-1"}
    a = client.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=h).json()
    b = client.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=h).json()
    assert a["id"] == b["id"]
    r = client.post(
        "/v1/files", files={"file": ("d.jsonl", b'{"text": "b"}\n')}, data={"purpose": "fine-tune"}, headers=h
    )
    assert r.status_code == 409
    assert r.headers["x-should-retry"] == "false"

"""Both stores behind one interface: put/get/list/stream/delete, manifests, and the S3 one against a
real S3-compatible server (moto's, as a subprocess)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import S3_BUCKET, S3_CREDENTIALS, FaultyProxy
from tuneforge.storage import ArtifactStore, LocalStore, StoreError, StoreMissing, open_store, read_manifest
from tuneforge.storage.manifest import write_manifest


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in S3_CREDENTIALS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield open_store(f"file://{tmp_path / 'store'}")
        return
    request.getfixturevalue("aws_env")
    endpoint = request.getfixturevalue("moto_s3")
    yield open_store(f"s3://{S3_BUCKET}/unit-{uuid.uuid4().hex[:8]}", endpoint_url=endpoint)


def test_put_get_list_stream_delete(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    store.put_file("a/big.bin", src)
    store.put_bytes("a/b/small.txt", b"hello")
    assert store.list("a") == ["a/b/small.txt", "a/big.bin"]
    assert store.list("nothing") == []
    assert store.size("a/big.bin") == 3 << 20
    assert store.get_bytes("a/b/small.txt") == b"hello"
    chunks = list(store.stream("a/big.bin", chunk=1 << 20))
    assert len(chunks) >= 3 and b"".join(chunks) == src.read_bytes()
    store.get_file("a/big.bin", tmp_path / "out" / "copy.bin")
    assert (tmp_path / "out" / "copy.bin").read_bytes() == src.read_bytes()
    with pytest.raises(StoreMissing):
        store.get_bytes("a/missing")
    with pytest.raises(StoreMissing):
        list(store.stream("a/missing"))
    assert store.exists("a/big.bin") and not store.exists("a/missing")
    store.delete("a/big.bin")
    assert not store.exists("a/big.bin")
    store.delete_prefix("a")
    assert store.list("a") == []


def test_a_folder_counts_only_once_its_manifest_is_written(store: ArtifactStore) -> None:
    store.put_bytes("ckpt/step-1/state.pt", b"x")
    assert read_manifest(store, "ckpt/step-1") is None
    write_manifest(store, "ckpt/step-1", {"state.pt": "abc"})
    assert read_manifest(store, "ckpt/step-1") == {"state.pt": "abc"}


def test_local_keys_cannot_leave_the_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    (tmp_path / "secret").write_text("no")
    with pytest.raises(StoreMissing):
        store.get_bytes("../secret")
    (tmp_path / "root").mkdir(exist_ok=True)
    (tmp_path / "root" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(StoreMissing):
        store.get_bytes("link")


def test_s3_presigned_url_downloads_without_credentials(aws_env: None, moto_s3: str) -> None:
    store = open_store(f"s3://{S3_BUCKET}/presign", endpoint_url=moto_s3)
    store.put_bytes("files/f1", b'{"text": "hi"}\n')
    url = store.presigned_url("files/f1", 60, filename="data.jsonl")
    assert url is not None
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b'{"text": "hi"}\n'
    assert "data.jsonl" in r.headers["content-disposition"]


def test_an_unreachable_bucket_is_a_store_error(aws_env: None, moto_s3: str) -> None:
    proxy = FaultyProxy(int(moto_s3.rsplit(":", 1)[1]))
    try:
        store = open_store(f"s3://{S3_BUCKET}/outage", endpoint_url=proxy.url)
        store.put_bytes("k", b"v")
        proxy.set("down")
        with pytest.raises(StoreError) as caught:
            store.get_bytes("k")
        assert not isinstance(caught.value, StoreMissing)
        proxy.set("up")
        assert store.get_bytes("k") == b"v"
    finally:
        proxy.close()


def test_store_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="bucket"):
        open_store("s3:///prefix")
    with pytest.raises(ValueError, match="file://"):
        open_store("gs://bucket")

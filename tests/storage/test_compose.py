"""Composing one object from stored parts (`/v1/uploads`): the S3 part plan, and both stores against
real storage (a directory, and moto's S3 server as a subprocess), committed and aborted."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import S3_BUCKET, S3_CREDENTIALS
from tuneforge.storage import ArtifactStore, Source, StoreError, open_store
from tuneforge.storage.compose import MIN_PART, Span, plan_parts
from tuneforge.storage.s3 import S3Store

MiB = 1 << 20


def _covers(plan_spans: list[Span], sources: list[Source]) -> bool:
    """The spans, in order, are exactly every source's bytes in order."""
    expected = [(s.key, i) for s in sources for i in (0, s.size)]
    merged: list[tuple[str, int, int]] = []
    for span in plan_spans:
        if merged and merged[-1][0] == span.key and merged[-1][2] == span.start:
            merged[-1] = (span.key, merged[-1][1], span.end)
        else:
            merged.append((span.key, span.start, span.end))
    return [(k, b) for k, a, e in merged for b in (a, e)] == expected


def test_the_plan_copies_large_parts_and_gathers_small_ones() -> None:
    sources = [Source("a", 30), Source("b", 3), Source("c", 4), Source("d", 25), Source("e", 2)]
    plan = plan_parts(sources, min_part=10, max_part=100)
    shape = [(p.copy, [(s.key, s.start, s.end) for s in p.spans]) for p in plan]
    assert shape == [
        (True, [("a", 0, 30)]),  # large: copied inside the bucket
        (False, [("b", 0, 3), ("c", 0, 4), ("d", 0, 3)]),  # small ones, topped up from d's head
        (True, [("d", 3, 25)]),  # the rest of d, still large enough to copy
        (False, [("e", 0, 2)]),  # the last part may be short
    ]


def test_every_plan_keeps_s3s_rules_and_sends_little() -> None:
    rng = random.Random(7)
    for _ in range(500):
        sources = [Source(f"p{i}", rng.choice([1, 2, 5, 9, 10, 11, 17, 40, 250])) for i in range(rng.randint(1, 12))]
        plan = plan_parts(sources, min_part=10, max_part=64)
        assert _covers([s for p in plan for s in p.spans], sources)
        assert all(p.size >= 10 for p in plan[:-1]), plan
        assert all(p.size <= 64 for p in plan), plan
        assert all(len(p.spans) == 1 for p in plan if p.copy)
        # Bytes that go through the server: only small parts' runs, each at most one part's minimum.
        assert all(p.size <= 10 for p in plan if not p.copy)


def test_the_default_minimum_is_s3s() -> None:
    assert 5 * MiB == MIN_PART
    plan = plan_parts([Source("big", 64 * MiB), Source("small", MiB), Source("big2", 64 * MiB)])
    sent = sum(p.size for p in plan if not p.copy)
    assert sent == 5 * MiB  # 1 MiB small part + 4 MiB of big2's head; the other 124 MiB are copied


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
    yield open_store(f"s3://{S3_BUCKET}/compose-{uuid.uuid4().hex[:8]}", endpoint_url=endpoint)


def _pending_multipart(store: ArtifactStore) -> list[Any]:
    if not isinstance(store, S3Store):
        return []
    listed = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return list(listed.get("Uploads", []))


def _put_parts(store: ArtifactStore, sizes: list[int]) -> tuple[list[Source], bytes]:
    sources, whole = [], b""
    for i, size in enumerate(sizes):
        data = os.urandom(size)
        store.put_bytes(f"uploads/u1/part-{i}", data)
        sources.append(Source(f"uploads/u1/part-{i}", size))
        whole += data
    return sources, whole


def test_compose_writes_while_it_is_read_and_shows_nothing_before_commit(store: ArtifactStore) -> None:
    # Two large parts around two small ones: on S3, copies and a part sent up from the small ones.
    sources, whole = _put_parts(store, [6 * MiB, MiB, 2 * MiB, 7 * MiB, 100_000])
    composition = store.compose("files/f1", sources)
    read = b"".join(composition.chunks())
    assert read == whole
    assert not store.exists("files/f1")
    composition.commit()
    assert store.get_bytes("files/f1") == whole
    if isinstance(store, S3Store):
        # A real multipart upload: its ETag counts its parts (6 MiB copy, 5 MiB sent, rest of the
        # 7 MiB part copied, 100 kB sent last).
        etag = store.client.head_object(Bucket=store.bucket, Key=store._key("files/f1"))["ETag"]
        assert etag.strip('"').endswith(f"-{len(plan_parts(sources))}")
        assert len(plan_parts(sources)) == 4
    assert _pending_multipart(store) == []


def test_an_aborted_composition_leaves_nothing(store: ArtifactStore) -> None:
    sources, _ = _put_parts(store, [6 * MiB, MiB])
    composition = store.compose("files/f2", sources)
    chunks = composition.chunks()
    next(chunks)
    composition.abort()
    composition.abort()  # twice is harmless
    assert not store.exists("files/f2")
    assert _pending_multipart(store) == []
    with pytest.raises(StoreError):
        store.compose("files/f3", sources).commit()  # nothing was read: nothing to commit


def test_a_missing_or_short_part_is_a_store_error(store: ArtifactStore) -> None:
    sources, _ = _put_parts(store, [MiB])
    for bad in ([Source("uploads/u1/nope", 10)], [Source(sources[0].key, MiB + 1)]):
        composition = store.compose("files/f4", bad)
        with pytest.raises(StoreError):
            b"".join(composition.chunks())
        composition.abort()
        assert not store.exists("files/f4")
    assert _pending_multipart(store) == []


def test_an_empty_composition_is_an_empty_object(store: ArtifactStore) -> None:
    composition = store.compose("files/empty", [])
    assert list(composition.chunks()) == []
    composition.commit()
    assert store.get_bytes("files/empty") == b""

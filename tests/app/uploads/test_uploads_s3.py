"""`/v1/uploads` with the artifact store in a bucket (moto's S3 server, a real subprocess, behind a
`tuneforge api` of its own): completing is a real multipart upload, parts of any size, and nothing
is left behind by a cancel, an expiry (the API's sweeper thread) or a refused file."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from tests.app.uploads.common import MiB, add_part, backdate, chat_jsonl, complete, create, error, md5, row, split
from tests.helpers import S3_BUCKET, S3_CREDENTIALS, TMP, free_port, make_key, s3_env, spawn, stop, wait_http
from tuneforge.storage import Source
from tuneforge.storage.compose import plan_parts

PREFIX = f"up-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def bucket(moto_s3: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_s3,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )


@pytest.fixture(scope="module")
def s3_api(moto_s3: str) -> Iterator[str]:
    port = free_port()
    env = {**s3_env(moto_s3, PREFIX, TMP / "uploads-s3-data"), "TUNEFORGE_UPLOAD_SWEEP_SECONDS": "0.5"}
    proc = spawn(["api", "--port", str(port)], env=env, log=TMP / "uploads-s3-api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture
def http(s3_api: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_key('uploads-s3')}"}
    with httpx.Client(base_url=s3_api, headers=headers, timeout=120) as c:
        yield c


def keys(bucket: Any, prefix: str) -> list[str]:
    pages = bucket.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=f"{PREFIX}/{prefix}")
    return [o["Key"].removeprefix(f"{PREFIX}/") for page in pages for o in page.get("Contents", [])]


def pending_multipart(bucket: Any) -> list[Any]:
    return list(bucket.list_multipart_uploads(Bucket=S3_BUCKET, Prefix=PREFIX).get("Uploads", []))


def test_parts_of_any_size_complete_into_one_multipart_object(http: httpx.Client, bucket: Any) -> None:
    data = chat_jsonl(17 * MiB)
    sizes = [6 * MiB, MiB, MiB, 8 * MiB + 12345]  # then the rest, about 1 MiB
    pieces = split(data, sizes)
    up = create(http, len(data))
    order = list(range(len(pieces)))
    random.Random(3).shuffle(order)  # sent in any order
    ids = {i: add_part(http, up["id"], pieces[i])["id"] for i in order}
    assert len(keys(bucket, f"uploads/{up['id']}/")) == len(pieces)
    part_ids = [ids[i] for i in range(len(pieces))]
    r = complete(http, up["id"], part_ids, md5=md5(data))
    assert r.status_code == 200, r.text
    file_id = r.json()["file"]["id"]
    key = f"{PREFIX}/files/{file_id}"
    # One S3 multipart upload: 6 MiB copied in the bucket, the two 1 MiB parts topped up to 5 MiB
    # from the next part's head and sent, that part's rest copied, the last part sent.
    plan = plan_parts([Source(str(i), len(p)) for i, p in enumerate(pieces)])
    assert [p.copy for p in plan] == [True, False, True, False]
    assert bucket.head_object(Bucket=S3_BUCKET, Key=key)["ETag"].strip('"').endswith(f"-{len(plan)}")
    assert bucket.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read() == data
    assert http.get(f"/v1/files/{file_id}/content").content == data
    assert keys(bucket, f"uploads/{up['id']}/") == []  # the parts are gone
    assert pending_multipart(bucket) == []


def test_a_refused_file_leaves_no_object_and_no_open_multipart_upload(http: httpx.Client, bucket: Any) -> None:
    good = chat_jsonl(6 * MiB)
    data = good + b'{"messages": "not a list"}\n'
    up = create(http, len(data))
    ids = [add_part(http, up["id"], p)["id"] for p in split(data, [6 * MiB])]
    before = keys(bucket, "files/")
    err = error(complete(http, up["id"], ids), 400)
    bad_line = good.count(b"\n") + 1
    assert err["code"] == "invalid_file" and f"line {bad_line}:" in err["message"]
    assert keys(bucket, "files/") == before
    assert pending_multipart(bucket) == []
    assert row(up["id"])["status"] == "pending"  # still cancellable, or completable with other parts


def test_cancel_removes_the_parts_from_the_bucket(http: httpx.Client, bucket: Any) -> None:
    up = create(http, 2 * MiB)
    add_part(http, up["id"], os.urandom(MiB))
    assert len(keys(bucket, f"uploads/{up['id']}/")) == 1
    assert http.post(f"/v1/uploads/{up['id']}/cancel").json()["status"] == "cancelled"
    assert keys(bucket, f"uploads/{up['id']}/") == []


def test_the_apis_sweeper_expires_an_upload_and_removes_its_parts(http: httpx.Client, bucket: Any) -> None:
    up = create(http, 3 * MiB)
    add_part(http, up["id"], os.urandom(MiB))
    backdate(up["id"])
    deadline = time.monotonic() + 30
    while keys(bucket, f"uploads/{up['id']}/") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert keys(bucket, f"uploads/{up['id']}/") == []
    assert row(up["id"]) == {"status": "expired", "parts_removed": True, "received_bytes": MiB}

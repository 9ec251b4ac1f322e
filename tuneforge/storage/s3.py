"""A store in an S3-compatible bucket (AWS S3, MinIO, moto...), through boto3.

`s3://bucket/prefix`; the endpoint comes from TUNEFORGE_S3_ENDPOINT_URL and the credentials from
the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, or a
profile / instance role). Every boto error becomes a StoreError (StoreMissing for a missing key),
so callers handle one family.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tuneforge.storage.base import StoreError, StoreMissing
from tuneforge.storage.compose import MAX_PARTS, Composition, Source, Span, plan_parts

MISSING = {"404", "NoSuchKey", "NotFound"}


def _error(exc: Exception, key: str) -> StoreError:
    if isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in MISSING:
        return StoreMissing(key)
    return StoreError(f"S3 {type(exc).__name__} on {key!r}: {exc}")


class S3Store:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            signature_version="s3v4",
            # Path-style on a custom endpoint: MinIO and moto serve every bucket on one host name.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)
        # Multipart above 16 MiB: an adapter or optimizer state uploads in parts.
        self.transfer = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def local_path(self, key: str) -> Path | None:
        return None

    def put_file(self, key: str, path: Path) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key), Config=self.transfer)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise _error(exc, key) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, key) from exc

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._key(key), tmp, Config=self.transfer)
            os.replace(tmp, dest)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise _error(exc, key) from exc
        finally:
            Path(tmp).unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, key) from exc

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except StoreMissing:
            return False
        return True

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, key) from exc

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys += [obj["Key"][strip:] for obj in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, prefix) from exc
        return sorted(keys)

    def stream(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, key) from exc
        try:
            while data := body.read(chunk):
                yield data
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, key) from exc
        finally:
            body.close()

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, key) from exc

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list(prefix)
        try:
            for i in range(0, len(keys), 1000):
                objects = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, prefix) from exc

    def presigned_url(self, key: str, expires: int, filename: str | None = None) -> str | None:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": self._key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires))

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, "") from exc

    def compose(self, key: str, sources: Sequence[Source]) -> Composition:
        return _S3Composition(self, key, sources)


class _S3Composition:
    """A multipart upload planned by `plan_parts`: large parts copied inside the bucket, small runs
    sent up from the bytes already read for the caller. Aborted, it leaves no incomplete upload."""

    def __init__(self, store: S3Store, key: str, sources: Sequence[Source]) -> None:
        self.store = store
        self.key = key
        self.plan = plan_parts(sources)
        if len(self.plan) > MAX_PARTS:
            raise StoreError(f"{key}: {len(self.plan)} parts, over S3's limit of {MAX_PARTS}")
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.complete = False

    def _read(self, span: Span) -> Iterator[bytes]:
        if span.size == 0:
            return
        body = self.store.client.get_object(
            Bucket=self.store.bucket, Key=self.store._key(span.key), Range=f"bytes={span.start}-{span.end - 1}"
        )["Body"]
        got = 0
        try:
            while data := body.read(1 << 20):
                got += len(data)
                yield data
        finally:
            body.close()
        if got != span.size:
            raise StoreError(f"{span.key}: read {got} bytes of [{span.start}, {span.end})")

    def chunks(self) -> Iterator[bytes]:
        client, bucket, key = self.store.client, self.store.bucket, self.store._key(self.key)
        try:
            if self.plan:
                self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            for number, part in enumerate(self.plan, start=1):
                target = {"Bucket": bucket, "Key": key, "UploadId": self.upload_id, "PartNumber": number}
                if part.copy:
                    (span,) = part.spans
                    yield from self._read(span)
                    source = {"Bucket": bucket, "Key": self.store._key(span.key)}
                    copied = client.upload_part_copy(
                        **target, CopySource=source, CopySourceRange=f"bytes={span.start}-{span.end - 1}"
                    )
                    etag = copied["CopyPartResult"]["ETag"]
                else:
                    body = bytearray()
                    for span in part.spans:
                        for data in self._read(span):
                            body += data
                            yield data
                    etag = client.upload_part(**target, Body=bytes(body))["ETag"]
                self.parts.append({"PartNumber": number, "ETag": etag})
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, self.key) from exc
        self.complete = True

    def commit(self) -> None:
        if not self.complete:
            raise StoreError("a composition was committed before all of its bytes were written")
        client, bucket, key = self.store.client, self.store.bucket, self.store._key(self.key)
        try:
            if self.upload_id is None:  # no bytes at all: S3 has no multipart upload of zero parts
                client.put_object(Bucket=bucket, Key=key, Body=b"")
            else:
                client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
                )
                self.upload_id = None
        except (BotoCoreError, ClientError) as exc:
            raise _error(exc, self.key) from exc

    def abort(self) -> None:
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        # Best effort: an upload left incomplete costs storage until the bucket's lifecycle rule
        # (AbortIncompleteMultipartUpload, docs/api.md "Uploads") removes it; the caller's error matters more.
        with contextlib.suppress(BotoCoreError, ClientError):
            self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.store._key(self.key), UploadId=upload_id
            )

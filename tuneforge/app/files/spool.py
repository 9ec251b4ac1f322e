"""Request bodies to disk under a size limit: `POST /v1/files` and the parts of `/v1/uploads`.

The limit is applied twice: to the raw body while it streams in (`size_limited`, so an oversized
request is refused before it is buffered anywhere), and to the file part itself (`spool`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from tuneforge.app.core.errors import PayloadTooLarge

CHUNK = 1 << 20
# Room for the multipart envelope around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def too_large(limit: int, param: str, what: str = "upload") -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The {what} is larger than the limit of {limit >> 20} MB.", param=param, code="file_too_large"
    )


def size_limited(request: Request, limit: int, param: str, what: str = "upload") -> Request:
    """The same request, but reading past `limit` body bytes raises 413 mid-stream."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(limit - MULTIPART_OVERHEAD, param, what)
        return message

    return Request(request.scope, receive)


def declared_too_large(request: Request, limit: int) -> bool:
    """Whether the request's Content-Length already says it is over `limit` (plus the envelope)."""
    declared = request.headers.get("content-length")
    return bool(declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD)


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


async def spool(upload: UploadFile, dest_dir: Path, limit: int, *, param: str, what: str = "file") -> Spooled:
    """Copy the upload to a temp file in `dest_dir`, refusing it as soon as it passes `limit` bytes.

    The copy and its hash run on a thread: both release the GIL for their megabyte chunks, so while a
    tenant's uploads are copied the event loop keeps answering everyone else (bench.fairness --uploads)."""
    return await run_in_threadpool(_copy, upload.file, dest_dir, limit, param, what)


def _copy(source: BinaryIO, dest_dir: Path, limit: int, param: str, what: str) -> Spooled:
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".upload-")
    digest = hashlib.sha256()
    size = 0
    try:
        source.seek(0)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise too_large(limit, param, what)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Spooled(Path(tmp), size, digest.hexdigest())

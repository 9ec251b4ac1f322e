"""Uploads: streamed to disk under a size limit, hashed, validated, then recorded.

Validation streams (files/parsing.py) and runs in a worker thread, never on the event loop. A file
assembled from `/v1/uploads` parts is recorded by `record_file` too: same table, same checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tuneforge.app.auth.service import Principal
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import Conflict, InvalidRequest, NotFound, Unavailable
from tuneforge.app.core.ids import new_id
from tuneforge.app.core.storage import file_key, get_store
from tuneforge.app.db.models import File
from tuneforge.app.files import quota, repository
from tuneforge.app.files.parsing import DatasetError, FileReport
from tuneforge.app.files.spool import spool
from tuneforge.app.files.validation import validate_in_child
from tuneforge.app.jobs import repository as jobs_repository
from tuneforge.storage import StoreError

log = logging.getLogger("tuneforge.api")

SUPPORTED_PURPOSES = ("fine-tune",)


def get(session: Session, principal: Principal, file_id: str, *, write: bool = False) -> File:
    """Another organization's file is a 404 exactly like a file that does not exist."""
    f = repository.get(session, principal.scope(write=write), file_id)
    if f is None:
        raise NotFound(f"No such file: {file_id}", param="file_id", code="file_not_found")
    return f


def invalid_file(exc: DatasetError, param: str = "file") -> InvalidRequest:
    shown = "; ".join(exc.errors[:10])
    return InvalidRequest(f"Invalid training file: {shown}", param=param, code="invalid_file")


def record_file(
    session: Session,
    org_id: str,
    *,
    file_id: str,
    filename: str,
    purpose: str,
    size: int,
    sha256: str,
    report: FileReport,
    idempotency: tuple[str, str] | None = None,
) -> File:
    """The row of a validated file stored under `file_key(file_id)`."""
    record = File(
        id=file_id,
        organization_id=org_id,
        filename=filename,
        purpose=purpose,
        bytes=size,
        sha256=sha256,
        format=report.format,
        n_rows=report.n_rows,
        columns=report.columns,
        status="processed",
        storage_path=file_key(file_id),
        idempotency_key=idempotency[0] if idempotency else None,
        idempotency_hash=idempotency[1] if idempotency else None,
    )
    session.add(record)
    session.flush()
    return record


async def upload(
    session: Session,
    settings: Settings,
    principal: Principal,
    upload: UploadFile,
    purpose: str,
    idempotency_key: str | None,
) -> File:
    if purpose not in SUPPORTED_PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(SUPPORTED_PURPOSES)}, not {purpose!r}.", param="purpose"
        )
    # Spooled next to its final place on a local store (one rename), or to the data dir's temp
    # folder before it goes to a bucket: it is validated whole either way.
    spool_dir = settings.uploads_dir if not settings.store_is_remote else settings.data_dir / "tmp"
    spooled = await spool(upload, spool_dir, settings.max_upload_mb << 20, param="file")
    tmp, size, sha256 = spooled.path, spooled.size, spooled.sha256
    try:
        filename = Path(upload.filename or "upload").name[:255] or "upload"
        fingerprint = hashlib.sha256(f"{sha256}\0{purpose}\0{filename}".encode()).hexdigest()
        if idempotency_key:
            existing = await run_in_threadpool(
                repository.get_by_idempotency_key, session, principal.organization_id, idempotency_key
            )
            if existing is not None:
                if existing.idempotency_hash != fingerprint:
                    raise Conflict(
                        "This Idempotency-Key was already used for a different upload.",
                        param="Idempotency-Key",
                        code="idempotency_key_reused",
                    )
                return existing
        try:
            # In a child process: parsing 512 MB takes seconds of CPU that neither the event loop nor
            # the API's interpreter (its GIL) may spend (files/validation.py).
            report = await validate_in_child(
                tmp, max_rows=settings.max_upload_rows, max_line_bytes=settings.max_line_bytes
            )
        except DatasetError as exc:
            raise invalid_file(exc) from exc
        file_id = new_id("file")
        # Stored under its id: the client's filename never becomes part of a path.
        key = file_key(file_id)
        store = get_store(settings)
        final = store.local_path(key)
        if final is not None:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        else:
            try:
                await run_in_threadpool(store.put_file, key, tmp)
            except StoreError as exc:
                raise unavailable(exc) from exc

        def check_and_record() -> File:
            # Checked last, after every await, so the organization's row is locked only until the
            # route commits, and before anything is recorded.
            try:
                quota.check(session, settings, principal.organization_id, adding=size, param="file")
            except BaseException:
                with contextlib.suppress(StoreError):
                    store.delete(key)
                raise
            return record_file(
                session,
                principal.organization_id,
                file_id=file_id,
                filename=filename,
                purpose=purpose,
                size=size,
                sha256=sha256,
                report=report,
                idempotency=(idempotency_key, fingerprint) if idempotency_key else None,
            )

        # On a thread, as every query of an async route: a query on the event loop (the row lock
        # above waits for another upload's commit) would hold up every other tenant's requests.
        return await run_in_threadpool(check_and_record)
    finally:
        tmp.unlink(missing_ok=True)


def list_files(
    session: Session, principal: Principal, *, purpose: str | None, after: str | None, limit: int, ascending: bool
) -> list[File]:
    return repository.list_page(
        session, principal.organization_id, purpose=purpose, after=after, limit=limit, ascending=ascending
    )


def delete(session: Session, settings: Settings, principal: Principal, file_id: str) -> None:
    f = get(session, principal, file_id, write=True)
    users = jobs_repository.live_using_file(session, principal.organization_id, file_id)
    if users:
        raise Conflict(f"File {file_id} is used by running or queued job(s): {', '.join(users)}.", param="file_id")
    key = f.storage_path
    session.delete(f)
    session.flush()
    with contextlib.suppress(StoreError):  # an orphaned object is harmless; the row is gone
        get_store(settings).delete(key)


def unavailable(exc: StoreError) -> Unavailable:
    log.warning("artifact store error: %s", exc)
    return Unavailable("The artifact store is unreachable; try again shortly.", code="store_unavailable")


@dataclass(frozen=True)
class Content:
    """How to answer a download: a local file, a presigned URL, or the bucket's bytes streamed."""

    path: Path | None = None
    redirect: str | None = None
    chunks: Iterator[bytes] | None = None


def content(settings: Settings, f: File) -> Content:
    store = get_store(settings)
    local = store.local_path(f.storage_path)
    if local is not None:
        if not local.is_file():
            raise NotFound(f"The content of {f.id} is missing from the store.", param="file_id")
        return Content(path=local)
    try:
        if settings.s3_presigned_downloads:
            url = store.presigned_url(f.storage_path, settings.s3_presign_seconds, filename=f.filename)
            if url:
                return Content(redirect=url)
        chunks = store.stream(f.storage_path)
        first = next(chunks, b"")  # fail here, as a 503, rather than mid-response
    except StoreError as exc:
        raise unavailable(exc) from exc
    return Content(chunks=itertools.chain([first], chunks))

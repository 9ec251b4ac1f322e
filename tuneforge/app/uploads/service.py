"""Uploads in parts, in OpenAI's shape: create, add parts (any order, in parallel), complete (the order
is `part_ids`'), cancel; an upload not completed by `expires_at` expires.

Parts are objects in the artifact store under `uploads/<upload id>/<part id>`. Completing composes
them into `files/<file id>` (storage/compose.py: an S3 multipart upload where the sizes allow it),
validating and hashing the bytes as they pass (assembly.py, in a worker thread), and records an
ordinary file. The parts are removed once an upload completes, is cancelled or expires (now, or by
the sweeper when the store was unreachable).

Services flush; routes commit. The completion is the exception: it outlives its request if the
client goes away, so the thread that assembles the file records it with a session of its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from tuneforge.app.auth.service import Principal
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from tuneforge.app.core.ids import new_id
from tuneforge.app.core.storage import file_key, get_store
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import File, Upload, UploadPart
from tuneforge.app.db.types import utcnow
from tuneforge.app.files import quota
from tuneforge.app.files import service as files
from tuneforge.app.files.parsing import DatasetError
from tuneforge.app.files.spool import MULTIPART_OVERHEAD, declared_too_large, size_limited, spool, too_large
from tuneforge.app.uploads import repository
from tuneforge.app.uploads.assembly import assemble
from tuneforge.app.uploads.schemas import UploadComplete, UploadCreate, shown_status
from tuneforge.app.uploads.status import UploadStatus
from tuneforge.storage import Source, StoreError

log = logging.getLogger("tuneforge.api")

# A completion that began holds the upload this long: a process that died mid-way lets go after it.
# An hour is far more than validating the largest upload takes (docs/benchmarks.md).
COMPLETION_LEASE = dt.timedelta(hours=1)
# S3 numbers a multipart upload's parts up to 10,000; more client parts than that is no real upload.
MAX_PARTS = 10_000
# Completions validating at once in one API process: each takes a core while it runs.
COMPLETIONS_AT_ONCE = 2
FINE_TUNE_MIME_TYPES = (
    "text/jsonl",
    "application/jsonl",
    "application/x-ndjson",
    "application/json",
    "text/csv",
    "text/tab-separated-values",
    "text/plain",
    "application/octet-stream",
)


def part_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def _lease_start(now: dt.datetime) -> dt.datetime:
    return now - COMPLETION_LEASE


def _not_found(upload_id: str) -> NotFound:
    return NotFound(f"No such upload: {upload_id}", param="upload_id", code="upload_not_found")


def get(session: Session, principal: Principal, upload_id: str) -> Upload:
    """Every upload route changes state, so even an admin key reaches only its own organization's;
    another organization's upload is a 404 exactly like one that does not exist."""
    upload = repository.get(session, principal.organization_id, upload_id)
    if upload is None:
        raise _not_found(upload_id)
    return upload


def _state_error(upload: Upload, now: dt.datetime, doing: str) -> Conflict:
    """Why `upload` cannot be `doing` (it is not free: ended, expired, or being completed)."""
    status = shown_status(upload, now)
    if status == UploadStatus.COMPLETED:
        return Conflict(
            f"Upload {upload.id} is already completed (file {upload.file_id}); it cannot be {doing}.",
            param="upload_id",
            code="upload_already_completed",
        )
    if status == UploadStatus.CANCELLED:
        return Conflict(
            f"Upload {upload.id} was cancelled; it cannot be {doing}. Create a new upload.",
            param="upload_id",
            code="upload_cancelled",
        )
    if status == UploadStatus.EXPIRED:
        return Conflict(
            f"Upload {upload.id} expired at {upload.expires_at.isoformat()} without being completed "
            f"(TUNEFORGE_UPLOAD_EXPIRES_SECONDS); it cannot be {doing}. Create a new upload.",
            param="upload_id",
            code="upload_expired",
        )
    return Conflict(
        f"Upload {upload.id} is being completed by another request; it cannot be {doing} now.",
        param="upload_id",
        code="upload_completing",
    )


def _is_free(upload: Upload, now: dt.datetime) -> bool:
    return (
        upload.status == UploadStatus.PENDING
        and upload.expires_at > now
        and (upload.completing_since is None or upload.completing_since < _lease_start(now))
    )


def _refresh(session: Session, upload: Upload) -> Upload:
    session.refresh(upload)
    return upload


# ----------------------------------------------------------------------------- create


def create(session: Session, settings: Settings, principal: Principal, body: UploadCreate) -> Upload:
    mime = body.mime_type.split(";", 1)[0].strip().lower()
    if mime not in FINE_TUNE_MIME_TYPES:
        raise InvalidRequest(
            f"mime_type {body.mime_type!r} is not one fine-tune accepts: {', '.join(FINE_TUNE_MIME_TYPES)}.",
            param="mime_type",
            code="invalid_mime_type",
        )
    limit = int(settings.max_multipart_upload_gb * (1 << 30))
    if body.bytes > limit:
        raise InvalidRequest(
            f"bytes {body.bytes} is over the limit of {settings.max_multipart_upload_gb:g} GB for one upload "
            "(TUNEFORGE_MAX_MULTIPART_UPLOAD_GB).",
            param="bytes",
            code="upload_too_large",
        )
    quota.check(session, settings, principal.organization_id, adding=body.bytes, param="bytes")
    now = utcnow()
    upload = Upload(
        id=new_id("upload"),
        organization_id=principal.organization_id,
        filename=Path(body.filename).name[:255] or "upload",
        purpose=body.purpose,
        mime_type=mime,
        bytes=body.bytes,
        received_bytes=0,
        n_parts=0,
        status=UploadStatus.PENDING,
        parts_removed=False,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=settings.upload_expires_seconds),
    )
    return repository.add(session, upload)


# ----------------------------------------------------------------------------- parts


def _check_free(session: Session, principal: Principal, upload_id: str, doing: str) -> Upload:
    upload = get(session, principal, upload_id)
    now = utcnow()
    if not _is_free(upload, now):
        raise _state_error(upload, now, doing)
    return upload


async def add_part(
    session: Session, settings: Settings, principal: Principal, upload_id: str, request: Request
) -> UploadPart:
    """Store the request's `data` as a part. The upload is checked before the body is read, and
    again (a conditional update) when the stored part is counted, since it may have been cancelled,
    completed or expired while the bytes came in."""
    await run_in_threadpool(_check_free, session, principal, upload_id, "given parts")
    # Nothing was written: hold no transaction (nor a pooled connection) while the body streams in.
    await run_in_threadpool(session.rollback)
    limit = settings.max_upload_part_mb << 20
    if declared_too_large(request, limit):
        raise too_large(limit, "data", "part")
    try:
        form = await size_limited(request, limit + MULTIPART_OVERHEAD, "data", "part").form(max_files=1, max_fields=4)
    except PayloadTooLarge:
        raise
    except Exception as exc:
        raise InvalidRequest("The body must be multipart/form-data with a `data` part.", param="data") from exc
    data = form.get("data")
    if not isinstance(data, UploadFile):
        raise InvalidRequest("Missing the `data` part (the part's bytes, as a file).", param="data")
    store = get_store(settings)
    part_id = new_id("part")
    key = f"{part_prefix(upload_id)}/{part_id}"
    final = store.local_path(key)
    spool_dir = final.parent if final is not None else settings.data_dir / "tmp"
    spooled = await spool(data, spool_dir, limit, param="data", what="part")
    try:
        if spooled.size == 0:
            raise InvalidRequest("The part is empty.", param="data", code="empty_part")
        if final is not None:
            os.replace(spooled.path, final)
        else:
            try:
                await run_in_threadpool(store.put_file, key, spooled.path)
            except StoreError as exc:
                raise files.unavailable(exc) from exc
        try:
            return await run_in_threadpool(
                _count_part, session, settings, principal, upload_id, part_id, key, spooled.size
            )
        except BaseException:
            with contextlib.suppress(StoreError):
                await run_in_threadpool(store.delete, key)
            raise
    finally:
        spooled.path.unlink(missing_ok=True)


def _count_part(
    session: Session, settings: Settings, principal: Principal, upload_id: str, part_id: str, key: str, size: int
) -> UploadPart:
    """Count a stored part against its upload. The organization's row is locked first (until the
    route commits), so parts counted at once in one organization take turns."""
    now = utcnow()
    quota.lock(session, principal.organization_id)
    upload = get(session, principal, upload_id)
    # Parts beyond the declared bytes (a part sent twice, say) are kept until completion and count
    # against the quota for what they add.
    extra = max(upload.bytes, upload.received_bytes + size) - max(upload.bytes, upload.received_bytes)
    if extra > 0:
        quota.check(session, settings, principal.organization_id, adding=extra, param="data")
    if upload.n_parts >= MAX_PARTS:
        raise InvalidRequest(f"An upload takes at most {MAX_PARTS} parts.", param="data", code="too_many_parts")
    max_total = int(settings.max_multipart_upload_gb * (1 << 30))
    if not repository.add_part_bytes(
        session, upload_id, size, now=now, lease_start=_lease_start(now), max_total=max_total
    ):
        upload = _refresh(session, upload)
        if _is_free(upload, now):
            raise InvalidRequest(
                f"This part would bring the upload's parts to {upload.received_bytes + size} bytes, over the "
                f"limit of {settings.max_multipart_upload_gb:g} GB (TUNEFORGE_MAX_MULTIPART_UPLOAD_GB).",
                param="data",
                code="upload_too_large",
            )
        raise _state_error(upload, now, "given parts")
    return repository.add_part(session, UploadPart(id=part_id, upload_id=upload_id, bytes=size, storage_key=key))


# ----------------------------------------------------------------------------- complete


@dataclass(frozen=True)
class Claim:
    """What the assembling thread needs: plain values, no ORM rows bound to the request's session."""

    upload_id: str
    org_id: str
    claimed_at: dt.datetime
    filename: str
    purpose: str
    sources: tuple[Source, ...]
    md5: str | None


def claim(session: Session, principal: Principal, upload_id: str, body: UploadComplete) -> Claim:
    """Check `part_ids` against the upload and take it for completing. The route commits the claim
    before the assembly starts, so a second request sees it at once."""
    upload = _check_free(session, principal, upload_id, "completed")
    seen: set[str] = set()
    for i, part_id in enumerate(body.part_ids):
        if part_id in seen:
            raise InvalidRequest(f"part_ids lists {part_id} twice.", param=f"part_ids[{i}]", code="duplicate_part")
        seen.add(part_id)
    found = repository.parts(session, upload.id, body.part_ids)
    for i, part_id in enumerate(body.part_ids):
        if part_id not in found:
            raise InvalidRequest(
                f"No part {part_id} in upload {upload.id}.", param=f"part_ids[{i}]", code="part_not_found"
            )
    listed = [found[p] for p in body.part_ids]
    total = sum(p.bytes for p in listed)
    if total != upload.bytes:
        raise InvalidRequest(
            f"The parts listed hold {total} bytes; the upload was created with bytes={upload.bytes}. "
            "List every part, each once.",
            param="part_ids",
            code="bytes_mismatch",
        )
    now = utcnow()
    if not repository.claim_completion(session, upload.id, now=now, lease_start=_lease_start(now)):
        raise _state_error(_refresh(session, upload), now, "completed")
    return Claim(
        upload_id=upload.id,
        org_id=upload.organization_id,
        claimed_at=now,
        filename=upload.filename,
        purpose=upload.purpose,
        sources=tuple(Source(p.storage_key, p.bytes) for p in listed),
        md5=body.md5,
    )


_limiter: anyio.CapacityLimiter | None = None


def _completion_limiter() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(COMPLETIONS_AT_ONCE)
    return _limiter


async def finish_in_thread(settings: Settings, taken: Claim) -> tuple[Upload, File]:
    """`finish` in a worker thread (at most COMPLETIONS_AT_ONCE per process): the event loop only
    awaits while the thread reads, hashes, parses and writes. If the client goes away the thread
    still finishes, and records the outcome itself."""
    return await anyio.to_thread.run_sync(partial(finish, settings, taken), limiter=_completion_limiter())


def finish(settings: Settings, taken: Claim) -> tuple[Upload, File]:
    """Assemble, validate and record a claimed upload, with sessions of its own (it outlives the request's)."""
    store = get_store(settings)
    file_id = new_id("file")
    try:
        assembled = assemble(
            store,
            file_key(file_id),
            taken.sources,
            md5=taken.md5,
            max_rows=settings.max_upload_rows,
            max_line_bytes=settings.max_line_bytes,
        )
    except BaseException as exc:
        with session_scope() as s:
            repository.release_completion(s, taken.upload_id, taken.claimed_at)
        if isinstance(exc, DatasetError):
            raise files.invalid_file(exc, param="part_ids") from exc
        if isinstance(exc, StoreError):
            raise files.unavailable(exc) from exc
        raise
    try:
        with session_scope() as s:
            if not repository.mark_completed(s, taken.upload_id, taken.claimed_at, file_id):
                raise _state_error(repository.get_internal(s, taken.upload_id), utcnow(), "completed")
            record = files.record_file(
                s,
                taken.org_id,
                file_id=file_id,
                filename=taken.filename,
                purpose=taken.purpose,
                size=assembled.size,
                sha256=assembled.sha256,
                report=assembled.report,
            )
    except BaseException:
        with contextlib.suppress(StoreError):
            store.delete(file_key(file_id))
        raise
    with session_scope() as s:
        upload = repository.get_internal(s, taken.upload_id)
        remove_parts(s, settings, upload)
    return upload, record


# ----------------------------------------------------------------------------- cancel, expiry


def cancel(session: Session, settings: Settings, principal: Principal, upload_id: str) -> Upload:
    """Cancel a pending upload (again: a no-op). Its parts are removed after the route commits."""
    upload = get(session, principal, upload_id)
    if upload.status == UploadStatus.CANCELLED:
        return upload
    now = utcnow()
    if not _is_free(upload, now) or not repository.mark_cancelled(
        session, upload.id, now=now, lease_start=_lease_start(now)
    ):
        raise _state_error(_refresh(session, upload), now, "cancelled")
    return _refresh(session, upload)


def remove_parts(session: Session, settings: Settings, upload: Upload) -> bool:
    """Delete an ended upload's parts from the store and their rows. A store error leaves them for
    the sweeper's next round."""
    try:
        get_store(settings).delete_prefix(part_prefix(upload.id))
    except StoreError as exc:
        log.warning("upload %s: its parts could not be removed yet: %s", upload.id, exc)
        return False
    repository.mark_parts_removed(session, upload.id)
    return True


def sweep_once(session: Session, settings: Settings, limit: int = 100) -> dict[str, int]:
    """Expire pending uploads past their time, and remove the parts of every ended upload that
    still has them. Commits as it goes: each step is a conditional update, safe beside replicas."""
    now = utcnow()
    expired = repository.expire_due(session, now=now, lease_start=_lease_start(now), limit=limit)
    session.commit()
    removed = 0
    for upload in repository.with_parts_left(session, limit):
        if remove_parts(session, settings, upload):
            removed += 1
        session.commit()
    return {"expired": len(expired), "parts_removed": removed}

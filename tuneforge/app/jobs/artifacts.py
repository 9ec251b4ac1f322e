"""A job's adapter as a download: found from what the worker recorded, packed from its manifest, and
streamed from the artifact store as a .tar.gz without a temporary file."""

from __future__ import annotations

import json
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tuneforge.app.core.errors import Conflict, NotFound, Unavailable
from tuneforge.app.db.models import Checkpoint, Job
from tuneforge.app.jobs import repository
from tuneforge.contract.status import JobStatus
from tuneforge.storage import ArtifactStore, StoreError, StoreMissing


@dataclass(frozen=True)
class Archive:
    """What a download will hold: each member's store key and size, checked before the first byte."""

    name: str
    members: list[tuple[str, str, int]]  # (relative path, store key, size)
    manifest: dict[str, str]


def adapter_source(session: Session, job: Job, checkpoint: int | None) -> tuple[str, dict[str, str], str]:
    """The recorded artifact location (a store key) and its manifest. Never a path a user supplied."""
    if checkpoint is not None:
        ckpt: Checkpoint | None = repository.checkpoint_at(session, job.id, checkpoint)
        if ckpt is None:
            raise NotFound(f"Job {job.id} has no checkpoint at step {checkpoint}.", param="checkpoint")
        return f"{ckpt.path}/adapter", ckpt.manifest, f"{job.id}-step-{checkpoint}"
    if job.model_deleted_at is not None:
        raise Conflict(
            f"The fine-tuned model {job.fine_tuned_model} of job {job.id} was deleted; its adapter and merged "
            "exports are gone. Its checkpoints are kept: download one with ?checkpoint=<step>.",
            param="checkpoint",
            code="model_deleted",
        )
    if job.adapter_path is None or job.adapter_manifest is None:
        raise Conflict(
            f"Job {job.id} is {job.status} and has no final adapter"
            + ("; list its checkpoints to download one." if job.status != JobStatus.SUCCEEDED else "."),
            code="adapter_not_available",
        )
    return job.adapter_path, job.adapter_manifest, f"{job.id}-adapter"


def plan_archive(store: ArtifactStore, source: str, manifest: dict[str, str], name: str) -> Archive:
    """Every member's size, read now, so that an unreachable store is a 503 and a missing file a
    409 before the response starts."""
    members = []
    for rel in sorted(manifest):
        if rel.startswith("/") or ".." in rel.split("/"):
            continue  # a manifest is written by the worker; this guards it anyway
        key = f"{source}/{rel}"
        try:
            members.append((rel, key, store.size(key)))
        except StoreMissing as exc:
            raise Conflict(
                f"The adapter file {rel} is missing from the artifact store.", code="adapter_missing"
            ) from exc
        except StoreError as exc:
            raise Unavailable(
                "The artifact store is unreachable; try again shortly.", code="store_unavailable"
            ) from exc
    return Archive(name, members, manifest)


def stream_archive(store: ArtifactStore, archive: Archive) -> Iterator[bytes]:
    """A .tar.gz of the adapter's files under `<name>/`, plus SHA256SUMS.json, one chunk at a time."""
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip header
    now = int(time.time())

    def header(arcname: str, size: int) -> bytes:
        info = tarfile.TarInfo(arcname)
        info.size, info.mode, info.mtime = size, 0o644, now
        return gz.compress(info.tobuf(tarfile.PAX_FORMAT))

    for rel, key, size in archive.members:
        yield header(f"{archive.name}/{rel}", size)
        sent = 0
        for chunk in store.stream(key):
            chunk = chunk[: size - sent]  # never more than the header promised
            sent += len(chunk)
            if out := gz.compress(chunk):
                yield out
        if sent != size:
            raise StoreError(f"{key}: read {sent} of {size} bytes")
        yield gz.compress(b"\0" * (-size % tarfile.BLOCKSIZE))
    sums = json.dumps({"files": archive.manifest}, indent=2, sort_keys=True).encode()
    yield header(f"{archive.name}/SHA256SUMS.json", len(sums))
    yield gz.compress(sums + b"\0" * (-len(sums) % tarfile.BLOCKSIZE))
    yield gz.compress(b"\0" * (2 * tarfile.BLOCKSIZE))  # end of archive
    yield gz.flush()

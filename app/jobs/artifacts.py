"""A job's adapter as a download: found from what the worker recorded, packed from its manifest."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from app.core.errors import Conflict, NotFound
from app.db.models import Checkpoint, Job
from app.jobs import repository
from contract.status import JobStatus


def adapter_source(session: Session, job: Job, checkpoint: int | None) -> tuple[Path, dict[str, str], str]:
    """The recorded artifact directory and its manifest. Never a path a user supplied."""
    if checkpoint is not None:
        ckpt: Checkpoint | None = repository.checkpoint_at(session, job.id, checkpoint)
        if ckpt is None:
            raise NotFound(f"Job {job.id} has no checkpoint at step {checkpoint}.", param="checkpoint")
        return Path(ckpt.path) / "adapter", ckpt.manifest, f"{job.id}-step-{checkpoint}"
    if job.adapter_path is None or job.adapter_manifest is None:
        raise Conflict(
            f"Job {job.id} is {job.status} and has no final adapter"
            + ("; list its checkpoints to download one." if job.status != JobStatus.SUCCEEDED else "."),
            code="adapter_not_available",
        )
    return Path(job.adapter_path), job.adapter_manifest, f"{job.id}-adapter"


def build_archive(source: Path, manifest: dict[str, str], name: str) -> Path:
    """A .tar.gz of the adapter's own files under `<name>/`, listed from the recorded manifest."""
    fd, tmp = tempfile.mkstemp(prefix="tuneforge-adapter-", suffix=".tar.gz")
    with open(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for rel in sorted(manifest):
            path = (source / rel).resolve()
            if source.resolve() not in path.parents:
                continue  # a manifest is written by the worker; this guards it anyway
            tar.add(path, arcname=f"{name}/{rel}", recursive=False)
        info = json.dumps({"files": manifest}, indent=2, sort_keys=True).encode()
        member = tarfile.TarInfo(f"{name}/SHA256SUMS.json")
        member.size = len(info)
        tar.addfile(member, io.BytesIO(info))
    return Path(tmp)

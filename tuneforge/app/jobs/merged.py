"""`GET /v1/fine_tuning/jobs/{id}/adapter?format=merged`: the base with the LoRA merged in.

The merge needs torch and the model, so it runs in a child process (`python -m worker.training.merge`):
the API never imports the engine, and no model stays loaded in the API process. The result is kept
under `<artifacts>/<job>/merged/<final|step-N>` (written atomically by the child), so a second
download is only an archive of files already there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import APIError, InvalidRequest
from tuneforge.app.db.models import Job
from tuneforge.storage import ArtifactStore, LocalStore, fetch_folder

MERGE_TIMEOUT_S = 1800


class MergeFailed(APIError):
    status_code = 500
    type = "server_error"


def check_mergeable(job: Job) -> None:
    task = (job.spec or {}).get("task", "causal_lm")
    if task != "causal_lm":
        raise InvalidRequest(
            f"format=merged is supported for causal_lm jobs only; job {job.id} is a {task} job. Download its "
            "adapter with format=peft (the default): it carries the trained head and id2label/label2id.",
            param="format",
            code="merge_not_supported",
        )


def merged_dest(settings: Settings, job: Job, checkpoint: int | None) -> Path:
    return settings.artifacts_dir / job.id / "merged" / ("final" if checkpoint is None else f"step-{checkpoint}")


def is_built(settings: Settings, job: Job, checkpoint: int | None) -> bool:
    return (merged_dest(settings, job, checkpoint) / "config.json").is_file()


def merged_dir(settings: Settings, job: Job, base_dir: Path, adapter_dir: Path, checkpoint: int | None) -> Path:
    """The merged folder for the job's final adapter or a checkpoint's, made on first request."""
    dest = merged_dest(settings, job, checkpoint)
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # One merge per folder: simultaneous first requests (threads of one API process, or API
    # processes on this host) wait for the first merge instead of running their own, which would
    # then fail to rename its result onto the folder the first one wrote.
    with _exclusive(dest.parent / f".{dest.name}.lock"):
        if not (dest / "config.json").is_file():
            _merge(job, base_dir, adapter_dir, dest)
    return dest


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _merge(job: Job, base_dir: Path, adapter_dir: Path, dest: Path) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(job.spec, fh)
        spec_path = Path(fh.name)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-P",
                "-m",
                "tuneforge.worker.training.merge",
                str(spec_path),
                str(base_dir),
                str(adapter_dir),
                str(dest),
            ],
            capture_output=True,
            text=True,
            timeout=MERGE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise MergeFailed(f"Merging job {job.id}'s adapter took over {MERGE_TIMEOUT_S}s.", code="merge_failed") from exc
    finally:
        spec_path.unlink(missing_ok=True)
    if proc.returncode != 0 or not (dest / "config.json").is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise MergeFailed(f"Merging job {job.id}'s adapter failed: {tail[0][:300]}", code="merge_failed")


def manifest_of(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        out[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return out


def export(
    settings: Settings, job: Job, adapter_dir: Path, checkpoint: int | None, name: str
) -> tuple[Path, dict[str, str], str]:
    """(folder, manifest, archive name) of the merged model for the adapter `adapter_source` found."""
    from tuneforge.app.models.service import job_base_dir

    check_mergeable(job)
    folder = merged_dir(settings, job, job_base_dir(settings, job), adapter_dir, checkpoint)
    return folder, manifest_of(folder), f"{name}-merged"


def adapter_on_disk(settings: Settings, store: ArtifactStore, source: str, manifest: dict[str, str]) -> Path:
    """The adapter folder `source` on this host's disk: the store's own folder when it is local, else
    downloaded into the cache by its manifest. Every export built on the API host starts here."""
    return store.local_path(source) or fetch_folder(store, source, manifest, settings.cache_dir / "folders" / source)


def export_from_store(
    settings: Settings,
    store: ArtifactStore,
    job: Job,
    source: str,
    manifest: dict[str, str],
    checkpoint: int | None,
    name: str,
) -> tuple[ArtifactStore, str, dict[str, str], str]:
    """The merged model as an archive source: (store, key, manifest, name) for `plan_archive`.

    The adapter is read from the artifact store (downloaded into the cache by its manifest when the
    store is remote); the merged folder is made on this API host and served from its local disk."""
    adapter_dir = adapter_on_disk(settings, store, source, manifest)
    folder, merged_manifest, merged_name = export(settings, job, adapter_dir, checkpoint, name)
    return LocalStore(folder.parent), folder.name, merged_manifest, merged_name

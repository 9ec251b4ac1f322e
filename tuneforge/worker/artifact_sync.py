"""The worker's side of the artifact store: the engine reads and writes a local directory, and this
glue moves inputs in and checkpoints and adapters out.

- Inputs are downloaded once into `<data_dir>/cache/files/` and checked against the recorded hash.
- A checkpoint or adapter is uploaded file by file, and its `MANIFEST.json` (file -> sha256) last:
  a folder without a manifest does not exist as far as resume and downloads are concerned.
- Before a run, the local checkpoints are replaced by the store's latest complete one, so a resumed
  attempt on any machine starts from exactly what the store holds.
- An unreachable store is retried with backoff for `store_retry_seconds`, then the job fails with
  `store_unavailable`.

On the default local store (`file://<data_dir>`) the engine's directory *is* the store, and every
step here is a no-op.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from tuneforge.app.core.config import Settings
from tuneforge.app.core.storage import get_store, job_prefix
from tuneforge.contract.status import ErrorCode
from tuneforge.storage import (
    MANIFEST,
    ManifestMismatch,
    StoreError,
    StoreMissing,
    fetch_folder,
    read_manifest,
    sha256_file,
)
from tuneforge.storage.manifest import write_manifest
from tuneforge.worker.training.checkpoints import MARKER
from tuneforge.worker.training.errors import TrainingError

log = logging.getLogger("tuneforge.worker")
T = TypeVar("T")


class ArtifactSync:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = get_store(settings)
        local = self.store.local_path("artifacts")
        self.same = local is not None and local == settings.artifacts_dir.resolve()

    # ---- retries

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.settings.store_retry_seconds
        delay = 0.5
        while True:
            try:
                return fn()
            except StoreMissing:
                raise
            except StoreError as exc:
                if time.monotonic() + delay > deadline:
                    message = f"The artifact store was unreachable while {what}: {exc}"
                    raise TrainingError(ErrorCode.STORE_UNAVAILABLE, message[:500]) from exc
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ---- inputs

    def input_file(self, file_id: str, key: str, sha256: str) -> Path:
        """A local path holding the upload's bytes, downloaded into the cache if the store is remote."""
        local = self.store.local_path(key)
        if local is not None:
            return local
        cached = self.settings.cache_dir / "files" / file_id
        if cached.is_file() and sha256_file(cached) == sha256:
            return cached
        try:
            self._retry(f"downloading {file_id}", lambda: self.store.get_file(key, cached))
        except StoreMissing as exc:
            raise TrainingError(ErrorCode.INVALID_FILE, f"File {file_id} is missing from the artifact store.") from exc
        if sha256_file(cached) != sha256:
            cached.unlink(missing_ok=True)
            raise TrainingError(ErrorCode.INVALID_FILE, f"File {file_id} in the store does not match its hash.")
        return cached

    def local_folder(self, prefix: str) -> Path:
        """A local directory holding a stored folder (an adapter, or a checkpoint's `adapter/`),
        downloaded into the cache by its manifest when the store is remote. Raises StoreMissing."""
        local = self.store.local_path(prefix)
        if local is not None:
            return local
        # A checkpoint's manifest sits on the step folder, one level above its adapter.
        owner, sub = prefix, ""
        if "/checkpoints/" in prefix and prefix.endswith("/adapter"):
            owner, sub = prefix.removesuffix("/adapter"), "adapter"
        manifest = self._retry(f"reading {owner}", partial(read_manifest, self.store, owner))
        if manifest is None:
            raise StoreMissing(owner)
        dest = self._fetch(owner, manifest, self.settings.cache_dir / "folders" / owner)
        return dest / sub if sub else dest

    def _fetch(self, prefix: str, manifest: dict[str, str], dest: Path) -> Path:
        """`storage.fetch_folder` with this worker's retries; a corrupt file fails the job."""

        def get(key: str, path: Path) -> None:
            self._retry(f"downloading {key}", partial(self.store.get_file, key, path))

        try:
            return fetch_folder(self.store, prefix, manifest, dest, get)
        except ManifestMismatch as exc:
            raise TrainingError(ErrorCode.INTERNAL, f"{exc}.") from exc

    # ---- checkpoints

    def checkpoint_key(self, job_id: str, step_dir: Path) -> str:
        return f"{job_prefix(job_id)}/checkpoints/{step_dir.name}"

    def upload_checkpoint(self, job_id: str, step_dir: Path) -> str:
        key = self.checkpoint_key(job_id, step_dir)
        if not self.same:
            self._upload_folder(step_dir, key, skip={MARKER})
        return key

    def upload_adapter(self, job_id: str, adapter_dir: Path) -> str:
        key = f"{job_prefix(job_id)}/adapter"
        if not self.same:
            self._upload_folder(adapter_dir, key, skip=set())
        return key

    def _upload_folder(self, folder: Path, prefix: str, skip: set[str]) -> None:
        files = {
            p.relative_to(folder).as_posix(): p
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in skip | {MANIFEST}
        }
        hashes = {rel: sha256_file(p) for rel, p in files.items()}
        for rel, path in files.items():
            self._retry(f"uploading {prefix}/{rel}", partial(self.store.put_file, f"{prefix}/{rel}", path))
        self._retry(f"writing {prefix}/{MANIFEST}", lambda: write_manifest(self.store, prefix, hashes))

    def restore_checkpoint(self, job_id: str, out_dir: Path) -> int | None:
        """Make `<out_dir>/checkpoints` hold exactly the store's latest complete checkpoint."""
        if self.same:
            return None
        local = out_dir / "checkpoints"
        shutil.rmtree(local, ignore_errors=True)
        prefix = f"{job_prefix(job_id)}/checkpoints"
        keys = self._retry("listing checkpoints", lambda: self.store.list(prefix))
        steps = sorted(
            {k.removeprefix(prefix + "/").split("/")[0] for k in keys if k.endswith("/" + MANIFEST)}, reverse=True
        )
        for name in steps:
            manifest = self._retry("reading a manifest", partial(read_manifest, self.store, f"{prefix}/{name}"))
            if manifest is None:
                continue
            tmp = self._fetch(f"{prefix}/{name}", manifest, local / f".tmp-restore-{name}")
            adapter = {r.removeprefix("adapter/"): h for r, h in manifest.items() if r.startswith("adapter/")}
            (tmp / MARKER).write_text(json.dumps(adapter, sort_keys=True))
            tmp.rename(local / name)
            return int(name.split("-")[1])
        return None


class PreparedStores:
    """The engine's `PreparedCache` (training/prepare.py) in the artifact store, under
    `prepared/<key>/` with a manifest written last: prepared once by any worker, read by every job,
    attempt and sweep trial on the same inputs. A remote store's copy is downloaded once per machine
    into `<cache_dir>/prepared/`."""

    PREFIX = "prepared"

    def __init__(self, sync: ArtifactSync) -> None:
        self.sync = sync

    def get(self, key: str) -> Path | None:
        prefix = f"{self.PREFIX}/{key}"
        local = self.sync.store.local_path(prefix)
        if local is not None:
            return local if (local / MANIFEST).is_file() else None
        manifest = self.sync._retry(f"reading {prefix}", partial(read_manifest, self.sync.store, prefix))
        if manifest is None:
            return None
        return self.sync._fetch(prefix, manifest, self.sync.settings.cache_dir / self.PREFIX / key)

    def put(self, key: str, folder: Path) -> Path:
        prefix = f"{self.PREFIX}/{key}"
        self.sync._upload_folder(folder, prefix, skip=set())
        local = self.sync.store.local_path(prefix)
        if local is not None:
            return local
        kept = self.sync.settings.cache_dir / self.PREFIX / key
        if kept != folder:
            shutil.rmtree(kept, ignore_errors=True)
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(folder, kept)
        return kept

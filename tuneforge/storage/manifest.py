"""Hashes, and the manifest that makes a stored folder count: written last, after every file it lists."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from tuneforge.storage.base import ArtifactStore, StoreError, StoreMissing

MANIFEST = "MANIFEST.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(store: ArtifactStore, prefix: str) -> dict[str, str] | None:
    """The `{relative path: sha256}` of a complete folder, or None while it is incomplete."""
    try:
        raw = store.get_bytes(f"{prefix}/{MANIFEST}")
    except StoreMissing:
        return None
    files = json.loads(raw)["files"]
    return {str(k): str(v) for k, v in files.items()}


def write_manifest(store: ArtifactStore, prefix: str, files: dict[str, str]) -> None:
    store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps({"files": files}, indent=1, sort_keys=True).encode())


class ManifestMismatch(StoreError):
    """A downloaded file whose hash is not the one its folder's manifest lists."""


def fetch_folder(
    store: ArtifactStore,
    prefix: str,
    manifest: dict[str, str],
    dest: Path,
    get: Callable[[str, Path], None] | None = None,
) -> Path:
    """Make `dest` hold the stored folder `prefix` as `manifest` lists it. Files already there with
    the listed hash are kept; the rest are downloaded (with `get`, default `store.get_file`, so a
    caller can add retries) and checked. Raises ManifestMismatch."""
    download = get or store.get_file
    for rel, digest in manifest.items():
        target = dest / rel
        if target.is_file() and sha256_file(target) == digest:
            continue
        download(f"{prefix}/{rel}", target)
        if sha256_file(target) != digest:
            raise ManifestMismatch(f"{prefix}/{rel} does not match its manifest")
    return dest

"""Hashes, and the manifest that makes a stored folder count: written last, after every file it lists."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from storage.base import ArtifactStore, StoreMissing

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

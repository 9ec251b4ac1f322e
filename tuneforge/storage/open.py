"""`TUNEFORGE_ARTIFACT_STORE` -> a store."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from tuneforge.storage.base import ArtifactStore


def open_store(url: str, *, endpoint_url: str | None = None) -> ArtifactStore:
    """`file:///abs/dir` (or a bare path) or `s3://bucket/prefix`."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        from tuneforge.storage.local import LocalStore

        return LocalStore(Path((parts.netloc + parts.path) if parts.scheme else url))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"an s3:// artifact store needs a bucket: {url!r}")
        from tuneforge.storage.s3 import S3Store

        return S3Store(parts.netloc, parts.path, endpoint_url)
    raise ValueError(f"artifact store must be file://<dir> or s3://bucket/prefix, not {url!r}")

"""The configured artifact store, opened once per process."""

from __future__ import annotations

from functools import lru_cache

from tuneforge.app.core.config import Settings
from tuneforge.storage import ArtifactStore, open_store


@lru_cache(maxsize=4)
def _open(url: str, endpoint_url: str | None) -> ArtifactStore:
    return open_store(url, endpoint_url=endpoint_url)


def get_store(settings: Settings) -> ArtifactStore:
    return _open(settings.artifact_store, settings.s3_endpoint_url)


def file_key(file_id: str) -> str:
    return f"files/{file_id}"


def job_prefix(job_id: str) -> str:
    return f"artifacts/{job_id}"

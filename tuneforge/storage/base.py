"""The store interface: keys are `/`-separated paths relative to the store's root (`files/<id>`,
`artifacts/<job>/checkpoints/step-00000010/state.pt`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from tuneforge.storage.compose import Composition, Source


class StoreError(Exception):
    """The store could not be reached or refused an operation (a bucket outage, a bad credential)."""


class StoreMissing(StoreError):
    """The key does not exist."""


class ArtifactStore(Protocol):
    url: str

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key`. Readers see either nothing or the whole file."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_file(self, key: str, dest: Path) -> None:
        """Download `key` to `dest` (written to a temp name beside it, then renamed)."""

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix` (recursively), sorted."""

    def stream(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in chunks, without holding it whole in memory."""

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """The file's path when the store is a local directory, else None."""

    def compose(self, key: str, sources: Sequence[Source]) -> Composition:
        """`key` made of `sources` in order, written while the caller reads it (storage/compose.py)."""

    def presigned_url(self, key: str, expires: int, filename: str | None = None) -> str | None:
        """A time-limited URL a client can GET directly, where the store supports it."""

    def check(self) -> None:
        """Raise StoreError when the store cannot be used (missing bucket, no credentials)."""

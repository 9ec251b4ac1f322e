"""A store in a local (or shared, mounted) directory: today's behaviour under the data dir."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from tuneforge.storage.base import StoreError, StoreMissing
from tuneforge.storage.compose import Composition, Source

CHUNK = 1 << 20


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        """The key's path under the root. An absolute key is a path recorded before stores existed
        (inside the data dir). Whatever leaves the root, a symlink included, does not exist here."""
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise StoreMissing(f"{key} (outside the store)")
        return path

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def _write_atomic(self, dest: Path, write: Callable[[BinaryIO], object]) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        if dest == path.resolve():
            return
        with path.open("rb") as src:
            self._write_atomic(dest, lambda out: shutil.copyfileobj(src, out, 1 << 20))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_atomic(self._path(key), lambda out: out.write(data))

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if src == dest.resolve():
            return
        try:
            with src.open("rb") as fh:
                self._write_atomic(dest, lambda out: shutil.copyfileobj(fh, out, 1 << 20))
        except FileNotFoundError as exc:
            raise StoreMissing(key) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StoreMissing(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise StoreMissing(key) from exc

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(f"{prefix.rstrip('/')}/{p.relative_to(base).as_posix()}" for p in base.rglob("*") if p.is_file())

    def stream(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        try:
            fh = self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise StoreMissing(key) from exc
        with fh:
            while data := fh.read(chunk):
                yield data

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def presigned_url(self, key: str, expires: int, filename: str | None = None) -> str | None:
        return None

    def compose(self, key: str, sources: Sequence[Source]) -> Composition:
        return _LocalComposition(self._path(key), [(self._path(s.key), s) for s in sources])

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.url}: {exc}") from exc


class _LocalComposition:
    """The parts copied, in order, into a temp file beside the result; renamed into place on commit."""

    def __init__(self, dest: Path, sources: list[tuple[Path, Source]]) -> None:
        self.dest = dest
        self.sources = sources
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        self.tmp = Path(tmp)
        self.out = os.fdopen(fd, "wb")
        self.complete = False

    def chunks(self) -> Iterator[bytes]:
        with self.out:
            for path, source in self.sources:
                copied = 0
                try:
                    fh = path.open("rb")
                except FileNotFoundError as exc:
                    raise StoreMissing(source.key) from exc
                with fh:
                    while data := fh.read(CHUNK):
                        copied += len(data)
                        self.out.write(data)
                        yield data
                if copied != source.size:
                    raise StoreError(f"{source.key} holds {copied} bytes; {source.size} were recorded")
        self.complete = True

    def commit(self) -> None:
        if not self.complete:
            raise StoreError("a composition was committed before all of its bytes were written")
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        self.out.close()
        self.tmp.unlink(missing_ok=True)

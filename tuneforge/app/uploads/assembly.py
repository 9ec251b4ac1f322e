"""Completing an upload's bytes: its parts composed into the file, validated, hashed, in one pass.

Blocking and CPU-bound, so it runs in a worker thread (`service.complete` hands it to
`anyio.to_thread.run_sync` under a small limiter), never on the event loop; it touches no database.
Memory stays flat: the store yields 1 MiB chunks (an S3 part sent up from small parts is at most
5 MiB), and the validator holds one line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tuneforge.app.core.errors import InvalidRequest
from tuneforge.app.files.parsing import DatasetError, FileReport, validate_stream
from tuneforge.storage import ArtifactStore, Source


@dataclass(frozen=True)
class Assembled:
    report: FileReport
    size: int
    sha256: str
    md5: str


class _Digests:
    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def tee(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.size += len(chunk)
            self.sha256.update(chunk)
            self.md5.update(chunk)
            yield chunk


def md5_mismatch(expected: str, actual: str) -> InvalidRequest:
    return InvalidRequest(
        f"The parts, in the order of part_ids, have MD5 {actual}, not the md5 given ({expected}). "
        "Check the order of part_ids and that every part was sent whole.",
        param="md5",
        code="md5_mismatch",
    )


def assemble(
    store: ArtifactStore,
    key: str,
    sources: Sequence[Source],
    *,
    md5: str | None,
    max_rows: int,
    max_line_bytes: int,
) -> Assembled:
    """Write `key` from `sources` in order and commit it only if the content validates and its MD5 is
    `md5` (when given). Raises DatasetError, InvalidRequest (md5) or StoreError; nothing is left
    under `key` then."""
    composition = store.compose(key, sources)
    digests = _Digests()
    chunks = digests.tee(composition.chunks())
    try:
        try:
            report = validate_stream(chunks, max_rows=max_rows, max_line_bytes=max_line_bytes)
        except DatasetError:
            if md5 is None:
                raise
            # With an md5 to check, a wrong order of parts is the likelier mistake than bad data:
            # read to the end and say so, rather than name a line of a garbled file.
            for _ in chunks:
                pass
            if digests.md5.hexdigest() != md5.lower():
                raise md5_mismatch(md5, digests.md5.hexdigest()) from None
            raise
        for _ in chunks:  # nothing is left after a successful validation; this makes sure
            pass
        if md5 is not None and digests.md5.hexdigest() != md5.lower():
            raise md5_mismatch(md5, digests.md5.hexdigest())
        composition.commit()
    except BaseException:
        composition.abort()
        raise
    return Assembled(report=report, size=digests.size, sha256=digests.sha256.hexdigest(), md5=digests.md5.hexdigest())

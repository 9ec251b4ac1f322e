"""One object composed of stored parts, in an order chosen only at the end (`/v1/uploads`).

A client uploads parts in any order, each stored as its own object; completing names the order.
`store.compose(key, sources)` returns a `Composition`: `chunks()` yields the result's bytes in order
(so the caller can validate and hash them as they pass) while it writes the result, `commit()` makes
it visible, and `abort()` leaves nothing behind. Nothing is visible under `key` before `commit()`.

On a local store the parts are copied into a temp file beside the result, then renamed. On S3 the
result is a real multipart upload: a part of at least `MIN_PART` bytes is copied inside the bucket
(UploadPartCopy: its bytes are read once, for the caller, but never sent back up), and smaller parts,
which S3 refuses anywhere but last, are joined through this process into parts of `MIN_PART`
(`plan_parts`). So at most `MIN_PART` bytes per small run are re-sent, however large the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

# S3's rules for a multipart upload: every part but the last at least 5 MiB, at most 5 GiB each,
# at most 10,000 parts.
MIN_PART = 5 << 20
MAX_PART = 5 << 30
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Source:
    """A stored object to include whole, and its size as recorded when it was stored."""

    key: str
    size: int


@dataclass(frozen=True)
class Span:
    """Bytes [start, end) of the object at `key`."""

    key: str
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class PlannedPart:
    """One part of the result: a single span copied inside the bucket (`copy`), or spans whose bytes
    this process reads and sends up as the part's body."""

    spans: tuple[Span, ...]
    copy: bool

    @property
    def size(self) -> int:
        return sum(s.size for s in self.spans)


def plan_parts(sources: Sequence[Source], min_part: int = MIN_PART, max_part: int = MAX_PART) -> list[PlannedPart]:
    """Parts for S3 whose concatenation is the sources in order, each but the last at least
    `min_part` bytes. A source of `min_part` or more is copied server-side (split evenly when over
    `max_part`); smaller ones are gathered, and topped up from the head of the next source, into
    sent parts of exactly `min_part` (the last may be shorter)."""
    parts: list[PlannedPart] = []
    gathered: list[Span] = []
    gathered_size = 0

    def send() -> None:
        nonlocal gathered_size
        parts.append(PlannedPart(tuple(gathered), copy=False))
        gathered.clear()
        gathered_size = 0

    for src in sources:
        pos = 0
        if gathered_size:
            take = min(src.size, min_part - gathered_size)
            gathered.append(Span(src.key, 0, take))
            gathered_size += take
            pos = take
            if gathered_size >= min_part:
                send()
        rest = src.size - pos
        if rest <= 0:
            continue
        if rest >= min_part:  # nothing is gathered here: it was just sent, or there was none
            pieces = -(-rest // max_part)
            step = -(-rest // pieces)
            while pos < src.size:
                end = min(src.size, pos + step)
                parts.append(PlannedPart((Span(src.key, pos, end),), copy=True))
                pos = end
        else:
            gathered.append(Span(src.key, pos, src.size))
            gathered_size += rest
    if gathered:
        send()
    return parts


class Composition(Protocol):
    def chunks(self) -> Iterator[bytes]:
        """The result's bytes in order, written (or copied) as they pass. Call once."""

    def commit(self) -> None:
        """Make the result visible under its key. Only after `chunks()` was consumed to its end."""

    def abort(self) -> None:
        """Remove whatever was written; safe to call at any point, and more than once."""

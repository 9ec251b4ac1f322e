"""An uploaded file's rows as the engine's `RowSource` (training/prepare.py): counted, read in batches
and by position, never all held at once.

JSONL rows travel to the preparing processes as raw lines and are parsed there (`json_rows`), so
this process reads bytes as fast as they are tokenized instead of parsing every row itself. The file
was validated at upload, so every non-blank line is one JSON object (files/parsing.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from tuneforge.app.files.parsing import Format, iter_rows


def json_rows(lines: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def identity(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows


class FileRows:
    def __init__(self, path: Path, fmt: Format, sha256: str) -> None:
        self.path, self.fmt = path, fmt
        self.fingerprint: str | None = sha256
        self._count: int | None = None

    def _lines(self) -> Iterator[bytes]:
        """The non-blank lines (a UTF-8 BOM off the first, as the parser takes it off)."""
        with self.path.open("rb") as fh:
            for n, line in enumerate(fh):
                if n == 0 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                head = line.lstrip()
                # A line of Unicode-only whitespace is blank to the parser (str.strip) too.
                if head and (head[:1] == b"{" or line.decode("utf-8").strip()):
                    yield line

    def count(self) -> int:
        if self._count is None:
            if self.fmt == "jsonl":
                self._count = sum(1 for _ in self._lines())
            else:
                self._count = sum(1 for _ in iter_rows(self.path, self.fmt))
        return self._count

    def batches(self, size: int) -> Iterator[list[Any]]:
        it: Iterator[Any] = self._lines() if self.fmt == "jsonl" else iter_rows(self.path, self.fmt)
        while batch := list(islice(it, size)):
            yield batch

    @property
    def decoder(self) -> Callable[[Any], list[dict[str, Any]]]:
        return json_rows if self.fmt == "jsonl" else identity

    def rows_at(self, indices: list[int]) -> list[dict[str, Any]]:
        wanted = set(indices)
        found: dict[int, dict[str, Any]] = {}
        if wanted:
            it: Iterator[Any] = self._lines() if self.fmt == "jsonl" else iter_rows(self.path, self.fmt)
            for n, item in enumerate(it):
                if n in wanted:
                    found[n] = json.loads(item) if self.fmt == "jsonl" else item
                    if len(found) == len(wanted):
                        break
        return [found[i] for i in indices]

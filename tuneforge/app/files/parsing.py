"""Dataset parsing shared by upload validation (API) and training (worker).

Pure functions over a file on disk or a stream of byte chunks: no web or database code. JSONL lines
must each be a JSON object; CSV needs a header row (comma, tab or semicolon separated). Errors name
the line they are on.

Validation streams (`validate_stream`): it reads one line at a time, at most `max_line_bytes + 1`
bytes of it, so its memory stays flat whatever the file's size, and the same code validates a file
on disk (`POST /v1/files`) and the parts of an upload as they are assembled (`/v1/uploads`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tuneforge.app.files.preference import check_preference_row, is_preference_row
from tuneforge.app.files.prompt import is_prompt_row
from tuneforge.contract import formats

Format = Literal["jsonl", "csv"]
MAX_REPORTED_ERRORS = 20
MAX_TRACKED_DISTINCT = 1000
# Bounds on what one file may make the API hold and store (docs/security.md): a column summary is
# kept per distinct top-level field and returned with the file on every read, so 900,000 distinct
# keys took the API to 1.2 GB and made each GET /v1/files 88 MB. Real datasets have a few columns.
MAX_COLUMNS = 256
MAX_COLUMN_NAME_CHARS = 256
# Nesting deeper than any dataset needs; json.loads itself raises RecursionError near 1,000 levels.
MAX_DEPTH = 64


class DatasetError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors

    def __reduce__(self) -> tuple[type[DatasetError], tuple[list[str]]]:
        # Raised in a validation process (files/validation.py) and re-raised in the API's.
        return (DatasetError, (self.errors,))


@dataclass
class ColumnSummary:
    types: set[str] = field(default_factory=set)
    non_null: int = 0
    numeric: bool = True
    # Hashes, not the values: a column of 1,000 long texts would otherwise hold them all.
    distinct: set[int] = field(default_factory=set)
    distinct_overflow: bool = False

    def add(self, value: Any) -> None:
        kind = _kind(value)
        self.types.add(kind)
        if value is None:
            return
        self.non_null += 1
        if not _is_number(value):
            self.numeric = False
        if kind in ("string", "number", "bool") and not self.distinct_overflow:
            self.distinct.add(hash(str(value)))
            if len(self.distinct) > MAX_TRACKED_DISTINCT:
                self.distinct_overflow = True
                self.distinct.clear()

    def as_dict(self) -> dict[str, Any]:
        return {
            "types": sorted(self.types),
            "non_null": self.non_null,
            "numeric": self.numeric and self.non_null > 0,
            "distinct": None if self.distinct_overflow else len(self.distinct),
        }


@dataclass
class FileReport:
    format: Format
    n_rows: int
    columns: dict[str, dict[str, Any]]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    return False


def _check_row(row: dict[str, Any]) -> str | None:
    """What is wrong with a conversation row (detected by its default column names) as training data."""
    shape = formats.detect(row)
    if shape in formats.CHAT_SHAPES:
        try:
            formats.to_chat(row, shape)
        except formats.RowError as exc:
            if is_prompt_row(row):  # reinforcement's prompts: no assistant turn yet (files/prompt.py)
                return None
            return str(exc)
    return None


class _UnquotedTab(csv.excel_tab):
    quoting = csv.QUOTE_NONE


def sniff_format(head: bytes) -> Format:
    """JSONL when the first non-blank character opens an object, CSV otherwise."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return "jsonl" if stripped.startswith(b"{") else "csv"


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks, so that `io.BufferedReader.readline` (C
    speed, and bounded by a size) splits lines whatever the chunks' sizes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._view:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._view = memoryview(chunk)
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


def read_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def _raw_lines(reader: io.BufferedIOBase, max_line_bytes: int) -> Iterator[bytes]:
    """The lines of `reader` with their newline. A line longer than the limit comes back cut at
    `max_line_bytes + 1` bytes, which is enough to refuse it without reading it whole."""
    return iter(partial(reader.readline, max_line_bytes + 1), b"")


def _text_lines(lines: Iterable[bytes], max_line_bytes: int, errors: list[str]) -> Iterator[tuple[int, str]]:
    for lineno, raw in enumerate(lines, start=1):
        if len(raw) > max_line_bytes:
            errors.append(f"line {lineno}: longer than the limit of {max_line_bytes} bytes")
            return
        if b"\x00" in raw:
            errors.append(f"line {lineno}: contains NUL bytes; this is not a text (JSONL/CSV) file")
            return
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            errors.append(f"line {lineno}: not valid UTF-8 (byte {exc.start}); this is not a text file")
            return
        yield lineno, text


def _depth(obj: Any) -> int:
    """How deeply lists and objects nest in `obj` (a scalar is 0), without recursion."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _json_problem(text: str, obj: Any) -> str | None:
    """What makes a parsed line unusable although it is valid JSON. Both checks run only on lines
    that could fail them (a cheap count or substring test first), so ordinary rows pay nothing."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    if "\\ud" in text or "\\uD" in text:  # a \uD800-\uDFFF escape: fine in a pair, not alone
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"a lone UTF-16 surrogate ({exc.object[exc.start]!a}) in a string; text must be valid Unicode "
                "(a surrogate escape needs its pair)"
            )
    return None


def _jsonl_rows(lines: Iterable[bytes], max_line_bytes: int, errors: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, text in _text_lines(lines, max_line_bytes, errors):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            errors.append(f"line {lineno}: nested more than {MAX_DEPTH} levels deep")
            continue
        except ValueError as exc:  # an integer of more than 4,300 digits (Python's int conversion limit)
            errors.append(f"line {lineno}: unusable JSON ({str(exc).split(':')[0]})")
            continue
        if problem := _json_problem(text, obj):
            errors.append(f"line {lineno}: {problem}")
            continue
        if not isinstance(obj, dict):
            errors.append(f"line {lineno}: expected a JSON object, got {_kind(obj)}")
            continue
        yield lineno, obj


def _csv_rows(raw: Iterable[bytes], max_line_bytes: int, errors: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    lines = _text_lines(raw, max_line_bytes, errors)
    first = next(lines, None)
    if first is None:
        return
    header_text = first[1]
    try:
        dialect: Any = csv.Sniffer().sniff(header_text, delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    if dialect.delimiter == "\t":
        # TSV files rarely quote, and a stray '"' in a message must not swallow the following rows.
        dialect = _UnquotedTab

    def chained() -> Iterator[str]:
        yield header_text
        for _, text in lines:
            yield text

    reader = csv.reader(chained(), dialect)
    try:
        header = next(reader)
    except csv.Error as exc:
        errors.append(f"line 1: unreadable CSV header ({exc})")
        return
    header = [h.strip() for h in header]
    if not header or any(not h for h in header) or len(set(header)) != len(header):
        errors.append("line 1: the CSV header must name every column once")
        return
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            errors.append(f"line {start}: malformed CSV ({exc})")
            return
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            errors.append(f"line {start}: expected {len(header)} fields, found {len(row)}")
            continue
        yield start, dict(zip(header, row, strict=True))


def iter_rows(path: Path, fmt: Format, *, max_line_bytes: int = 10_000_000) -> Iterator[dict[str, Any]]:
    """Rows of an already validated file, for training."""
    errors: list[str] = []
    rows = _jsonl_rows if fmt == "jsonl" else _csv_rows
    with path.open("rb") as fh:
        for _, row in rows(_raw_lines(fh, max_line_bytes), max_line_bytes, errors):
            yield row
    if errors:
        raise DatasetError(errors)


def validate_file(path: Path, *, max_rows: int, max_line_bytes: int) -> FileReport:
    """Parse the whole file once; raise DatasetError listing the first problems with line numbers."""
    return validate_stream(read_chunks(path), max_rows=max_rows, max_line_bytes=max_line_bytes)


HEAD_BYTES = 4096


def _add_columns(columns: dict[str, ColumnSummary], row: dict[str, Any]) -> str | None:
    """Count the row's values into their columns' summaries, or say which bound a new column breaks."""
    for key, value in row.items():
        summary = columns.get(key)
        if summary is None:
            if len(key) > MAX_COLUMN_NAME_CHARS:
                return f"a field name longer than {MAX_COLUMN_NAME_CHARS} characters ({key[:40]!r}...)"
            if len(columns) >= MAX_COLUMNS:
                return (
                    f"more than {MAX_COLUMNS} distinct fields in the file (a new one: {key[:40]!r}); "
                    "rows must share their field names"
                )
            summary = columns[key] = ColumnSummary()
        summary.add(value)
    return None


def validate_stream(chunks: Iterable[bytes], *, max_rows: int, max_line_bytes: int) -> FileReport:
    """`validate_file` over byte chunks in order (any sizes), read once, one line in memory at a time.

    On success every chunk has been consumed; on a DatasetError the rest may not have been."""
    it = iter(chunks)
    # The first bytes decide the format; they are read ahead and put back in front.
    head_chunks: list[bytes] = []
    seen, ended = 0, False
    while seen <= HEAD_BYTES and not ended:
        chunk = next(it, None)
        ended = chunk is None
        if chunk is not None:
            head_chunks.append(chunk)
            seen += len(chunk)
    head = b"".join(head_chunks)[:HEAD_BYTES]
    if ended and seen <= HEAD_BYTES and not head.strip():
        raise DatasetError(["the file has no rows"])
    fmt = sniff_format(head)
    reader = io.BufferedReader(_ChunkReader(itertools.chain(head_chunks, it)), buffer_size=1 << 20)
    errors: list[str] = []
    columns: dict[str, ColumnSummary] = {}
    n_rows = 0
    rows = _jsonl_rows if fmt == "jsonl" else _csv_rows
    for lineno, row in rows(_raw_lines(reader, max_line_bytes), max_line_bytes, errors):
        n_rows += 1
        if n_rows > max_rows:
            errors.append(f"line {lineno}: more than the limit of {max_rows} rows")
            break
        if problem := _add_columns(columns, row):
            errors.append(f"line {lineno}: {problem}")
            break
        if problem := _check_row(row):
            errors.append(f"line {lineno}: {problem}")
        if is_preference_row(row) and (problem := check_preference_row(row)):
            errors.append(f"line {lineno}: {problem}")
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if not errors and n_rows == 0:
        errors.append("the file has no rows")
    if fmt == "csv" and not errors and len(columns) < 1:
        errors.append("line 1: no columns found")
    if errors:
        raise DatasetError(errors[:MAX_REPORTED_ERRORS])
    return FileReport(
        format=fmt,
        n_rows=n_rows,
        columns={k: v.as_dict() for k, v in columns.items()},
    )

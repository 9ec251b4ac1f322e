"""Streaming validation (files/parsing.py `validate_stream`), shared by `POST /v1/files` and completed
uploads: the same answer whatever the chunking, memory flat whatever the size, and an endless line
refused after reading just past the limit."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.uploads.common import MiB, chat_row
from tuneforge.app.files.parsing import DatasetError, FileReport, validate_file, validate_stream

LIMITS = {"max_rows": 1_000_000, "max_line_bytes": 1_000_000}

SAMPLES = {
    "chat": b"".join(json.dumps(chat_row(i)).encode() + b"\n" for i in range(50)),
    "bom_and_crlf": b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b"}\r\n\r\n',
    "no_final_newline": b'{"text": "a"}\n{"text": "b"}',
    "csv": b"text,label\nhello,1\nworld,0\n",
    "tsv_quotes": b'text\tlabel\nsay "hi\t1\nbye\t0\n',
    "broken_json": b'{"text": "a"}\n{"text": \n{"text": "c"}\n',
    "bad_chat": b'{"messages": [{"role": "user", "content": "hi"}]}\n',
    "nul": b'{"text": "a"}\n\x00\x01\x02\n',
    "not_utf8": b'{"text": "a"}\n{"text": "\xff\xfe"}\n',
    "blank": b" \n\n\t\n",
    "blank_then_rows": b" " * 5000 + b'\n{"text": "a"}\n',
    "long_line": b'{"text": "' + b"x" * 1_000_100 + b'"}\n',
    "empty": b"",
}


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def outcome(run: object) -> FileReport | list[str]:
    assert callable(run)
    try:
        report = run()
        assert isinstance(report, FileReport)
        return report
    except DatasetError as exc:
        return exc.errors


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_any_chunking_gives_the_answer_the_file_gives(name: str, tmp_path: Path) -> None:
    data = SAMPLES[name]
    path = tmp_path / "d"
    path.write_bytes(data)
    expected = outcome(lambda: validate_file(path, **LIMITS))
    for size in (1, 3, 4095, 4096, 4097, MiB) if len(data) < 100_000 else (4095, 4097, MiB):
        assert outcome(lambda size=size: validate_stream(chunked(data, size), **LIMITS)) == expected, size


def rows(n_bytes: int) -> Iterator[bytes]:
    """Chat rows, generated as they are read: the test holds no copy of the data."""
    size, i = 0, 0
    while size < n_bytes:
        line = json.dumps(chat_row(i)).encode() + b"\n"
        size += len(line)
        i += 1
        yield line


def peak_while(run: object) -> int:
    assert callable(run)
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_whatever_the_size() -> None:
    small = peak_while(lambda: validate_stream(rows(MiB // 2), **LIMITS))
    large = peak_while(lambda: validate_stream(rows(6 * MiB), **LIMITS))
    # The reader's 1 MiB buffer and one row; the column summaries grow with distinct values, not size.
    assert large < 3 * MiB, large
    assert large < small + MiB // 2, (small, large)


def test_a_line_without_end_is_refused_after_the_limit_not_read_whole() -> None:
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"a" * MiB

    with pytest.raises(DatasetError) as caught:
        validate_stream(endless(), max_rows=10, max_line_bytes=2 * MiB)
    assert caught.value.errors == [f"line 1: longer than the limit of {2 * MiB} bytes"]
    assert pulled <= 4

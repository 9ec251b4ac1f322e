from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.app.files.parsing import DatasetError, FileReport, iter_rows, validate_file

# Full copies of ../shared/data/sms_spam.{jsonl,tsv}: a clone elsewhere has no ../shared.
DATA = Path(__file__).resolve().parents[2] / "fixtures"


def write(tmp_path: Path, content: bytes, name: str = "f") -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def check(path: Path, **kw: int) -> FileReport:
    return validate_file(path, max_rows=kw.get("max_rows", 1000), max_line_bytes=kw.get("max_line_bytes", 10_000))


def test_jsonl_columns_are_recorded(tmp_path: Path) -> None:
    p = write(tmp_path, b'{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n')
    report = check(p)
    assert report.format == "jsonl"
    assert report.n_rows == 2
    assert report.columns["label"]["distinct"] == 2
    assert report.columns["text"]["types"] == ["string"]


def test_broken_jsonl_line_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, b'{"text": "a"}\n{"text": "b"\n{"text": "c"}\n[1, 2]\n')
    with pytest.raises(DatasetError) as info:
        check(p)
    assert info.value.errors[0].startswith("line 2: invalid JSON")
    assert info.value.errors[1] == "line 4: expected a JSON object, got list"


def test_binary_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, b'{"text": "a"}\n\x89PNG\r\n\x1a\n\x00\x00\x00')
    with pytest.raises(DatasetError, match=r"line 2: .*not"):
        check(p)


def test_invalid_utf8_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, b"text\nab\xff\xfe\n")
    with pytest.raises(DatasetError, match="line 2: not valid UTF-8"):
        check(p)


def test_csv_with_wrong_field_count(tmp_path: Path) -> None:
    p = write(tmp_path, b"text,label\nhello,1\nbad,row,extra\n")
    with pytest.raises(DatasetError, match="line 3: expected 2 fields, found 3"):
        check(p)


def test_csv_numeric_column(tmp_path: Path) -> None:
    report = check(write(tmp_path, b"text,label\nhello,1.5\nworld,2\n"))
    assert report.format == "csv"
    assert report.columns["label"]["numeric"] is True
    assert report.columns["text"]["numeric"] is False


def test_messages_are_checked(tmp_path: Path) -> None:
    p = write(tmp_path, b'{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(DatasetError, match="line 1: `messages` has no assistant turn"):
        check(p)


def test_limits(tmp_path: Path) -> None:
    long = write(tmp_path, b'{"text": "' + b"x" * 20_000 + b'"}\n', "long")
    with pytest.raises(DatasetError, match="line 1: longer than the limit"):
        check(long)
    many = write(tmp_path, b'{"text": "a"}\n' * 5, "many")
    with pytest.raises(DatasetError, match="more than the limit of 3 rows"):
        check(many, max_rows=3)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no rows"):
        check(write(tmp_path, b"\n\n"))


def test_shared_data_files_parse() -> None:
    jsonl = validate_file(DATA / "sms_spam.jsonl", max_rows=10**6, max_line_bytes=10**6)
    tsv = validate_file(DATA / "sms_spam.tsv", max_rows=10**6, max_line_bytes=10**6)
    assert jsonl.n_rows == tsv.n_rows == 5574
    assert set(tsv.columns) == {"Label", "SMS"}
    rows = list(iter_rows(DATA / "sms_spam.tsv", "csv"))
    assert sum(r["Label"] == "spam" for r in rows) == 747

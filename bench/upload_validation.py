"""Streaming validation throughput: how fast a completed upload (or a `POST /v1/files` body) is
checked, on one core, and how much memory that takes whatever the file's size.

Generates a chat JSONL (OpenAI `messages` rows, a few hundred MB) as 64 MiB parts in a local store,
then measures, each in a fresh process pinned to one CPU:

- `json`: reading the lines and `json.loads` alone (a floor: what any JSONL check pays),
- `validate`: `validate_stream`, the whole upload validation (rows, chat checks, column summaries),
- `complete`: what `POST /v1/uploads/{id}/complete` does on a local store: the parts composed into the
  file while it is validated and hashed (SHA-256 and MD5), then committed.

MB/s is the file's size over the wall time; memory is the process's peak RSS (VmHWM) above its RSS
before the measurement.

    python -m bench.upload_validation            # 300 MB
    python -m bench.upload_validation --mb 1000 --record
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import in_fresh_process, print_result, proc_status, record

PART = 64 << 20
WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "question",
    "data",
    "train",
    "file",
    "line",
    "token",
    "part",
    "upload",
    "check",
    "fast",
    "slow",
    "why",
    "because",
]


def chat_line(rng: random.Random, i: int) -> bytes:
    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))

    row = {
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"({i}) {text(5, 60)}?"},
            {"role": "assistant", "content": text(10, 120)},
        ]
    }
    return json.dumps(row).encode() + b"\n"


def generate(root: Path, total_mb: int) -> list[tuple[str, int]]:
    """Rows into 64 MiB parts (cut mid-line, as a client's parts are) under `root`; (key, size) each."""
    rng = random.Random(0)
    target = total_mb * 1_000_000
    parts: list[tuple[str, int]] = []
    buf = bytearray()
    written, i = 0, 0

    def flush(data: bytes) -> None:
        key = f"uploads/bench/part-{len(parts):04d}"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        parts.append((key, len(data)))

    while written + len(buf) < target:
        buf += chat_line(rng, i)
        i += 1
        if len(buf) >= PART:
            flush(bytes(buf[:PART]))
            written += PART
            del buf[:PART]
    flush(bytes(buf))
    return parts


def child(payload: dict[str, Any]) -> None:
    os.sched_setaffinity(0, {payload["cpu"]})
    from tuneforge.app.files.parsing import read_chunks, validate_stream
    from tuneforge.app.uploads.assembly import assemble
    from tuneforge.storage import LocalStore, Source

    root = Path(payload["root"])
    store = LocalStore(root)
    sources = [Source(key, size) for key, size in payload["parts"]]
    size = sum(s.size for s in sources)

    def chunks() -> Any:
        for s in sources:
            yield from read_chunks(root / s.key)

    limits = {"max_rows": 100_000_000, "max_line_bytes": 1_000_000}
    before = proc_status("VmRSS")
    started = time.perf_counter()
    rows = None
    if payload["mode"] == "json":
        import io

        from tuneforge.app.files.parsing import _ChunkReader

        reader = io.BufferedReader(_ChunkReader(chunks()), buffer_size=1 << 20)
        rows = sum(1 for line in iter(reader.readline, b"") if json.loads(line) is not None)
    elif payload["mode"] == "validate":
        rows = validate_stream(chunks(), **limits).n_rows
    else:
        done = assemble(store, "files/bench-file", sources, md5=None, **limits)
        rows = done.report.n_rows
        store.delete("files/bench-file")
    seconds = time.perf_counter() - started
    print_result({"seconds": seconds, "bytes": size, "rows": rows, "rss_growth": proc_status("VmHWM") - before})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=300, help="size of the generated file (MB)")
    parser.add_argument("--record", action="store_true", help="append the result to docs/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    cpu = sorted(os.sched_getaffinity(0))[-1]
    with tempfile.TemporaryDirectory(prefix="tf-upload-bench-") as tmp:
        t0 = time.perf_counter()
        parts = generate(Path(tmp), args.mb)
        size = sum(s for _, s in parts)
        print(f"generated {size / 1e6:.0f} MB in {len(parts)} parts ({time.perf_counter() - t0:.0f} s)", flush=True)
        results = {}
        for mode in ("json", "validate", "complete"):
            payload = {"mode": mode, "root": tmp, "parts": parts, "cpu": cpu}
            results[mode] = in_fresh_process("bench.upload_validation", payload, mode)
            r = results[mode]
            print(f"{mode}: {r['bytes'] / 1e6 / r['seconds']:.1f} MB/s, +{r['rss_growth'] / 2**20:.1f} MiB", flush=True)
    rows = results["validate"]["rows"]
    lines = [
        f"A generated chat JSONL of {size / 1e6:.0f} MB ({rows:,} rows of OpenAI `messages`, {len(parts)} parts "
        f"of 64 MiB), each measurement in a fresh process pinned to one CPU:",
        "",
        "| what | MB/s | seconds | peak RSS growth |",
        "|---|---|---|---|",
    ]
    names = {
        "json": "lines + `json.loads` only (floor)",
        "validate": "`validate_stream` (the upload validation)",
        "complete": "complete on a local store (compose + validate + SHA-256 + MD5)",
    }
    for mode, r in results.items():
        lines.append(
            f"| {names[mode]} | {r['bytes'] / 1e6 / r['seconds']:.1f} | {r['seconds']:.1f} "
            f"| {r['rss_growth'] / 2**20:.1f} MiB |"
        )
    record("Uploads: streaming validation throughput on one core", lines, args.record)


if __name__ == "__main__":
    main()

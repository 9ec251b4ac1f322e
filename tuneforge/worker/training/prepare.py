"""Data prepared once: a file's rows tokenized into a `TokenStore` (tokenstore.py), in parallel and in
batched fast-tokenizer calls, kept in a cache named by what decides the tokens, so that a retry, a
resume, every trial of a sweep and every job on the same file read it instead of tokenizing again.

The tokens are exactly `data.encode_causal`'s (tests/worker/training/test_prepare.py compares them on
varied rows): a chat row is rendered by its template once for the conversation and twice per trainable
assistant turn (the count grows linearly with the turns), and all of a chunk's renders are tokenized in
one batched call instead of one call each. Rows are prepared in file order, whatever the split, so the
store serves every seed and split (setup.py makes the splits over row indices).

Why not `datasets`: its Arrow store keeps `input_ids` and `labels` as int64 lists (16 bytes a token
against 4 here), its fingerprints hash the map function rather than the inputs we know decide the tokens,
and the engine would gain pyarrow and pandas. bench/data_scale.py measures `Dataset.map` as the anchor.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tuneforge.contract import formats
from tuneforge.contract.spec import JobSpec
from tuneforge.contract.spec.data import data_fields
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.chat_template import parse_chat_row, render
from tuneforge.worker.training.data import _causal_kind
from tuneforge.worker.training.encoded import IGNORE
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.model import load_tokenizer
from tuneforge.worker.training.reporter import Reporter
from tuneforge.worker.training.tokenstore import DROPPED, TRUNCATED, StoreWriter, TokenStore

# Bump when the tokens a given input prepares to change: old stores are then never read again.
ENCODING_VERSION = 1
CHUNK_ROWS = 1000
# Below this many rows, starting processes (each loads the tokenizer) costs more than it saves.
PARALLEL_MIN_ROWS = 20_000
PROGRESS_EVERY_S = 5.0


class RowSource(Protocol):
    """A file's rows, read in batches without holding them all: the worker's glue (runner.py) reads
    an upload; tests and the bare script pass a list (`ListRows`)."""

    # The content's sha256, or None when the rows are not a stored file (then nothing is cached).
    fingerprint: str | None

    def count(self) -> int:
        """How many rows (for progress; cheap: a line count where it can be)."""

    def batches(self, size: int) -> Iterator[Any]:
        """The rows in order, `size` at a time: lists of one item a row, which `decoder` turns into dicts (raw lines
        parse in the preparing processes rather than in this one)."""

    @property
    def decoder(self) -> Callable[[Any], list[dict[str, Any]]]:
        """A module-level (picklable) function: one of `batches`' items -> its rows."""

    def rows_at(self, indices: list[int]) -> list[dict[str, Any]]:
        """The rows at these positions (file order), in the order asked."""


def identity(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows


@dataclass
class ListRows:
    rows: list[dict[str, Any]]
    fingerprint: str | None = None

    def count(self) -> int:
        return len(self.rows)

    def batches(self, size: int) -> Iterator[list[dict[str, Any]]]:
        for i in range(0, len(self.rows), size):
            yield self.rows[i : i + size]

    @property
    def decoder(self) -> Callable[[Any], list[dict[str, Any]]]:
        return identity

    def rows_at(self, indices: list[int]) -> list[dict[str, Any]]:
        return [self.rows[i] for i in indices]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


def as_source(rows: list[dict[str, Any]] | RowSource) -> RowSource:
    return ListRows(rows) if isinstance(rows, list) else rows


def all_rows(source: RowSource) -> list[dict[str, Any]]:
    """Every row as a dict: for the methods that encode from rows (preference pairs, prompts)."""
    if isinstance(source, ListRows):
        return source.rows
    return [row for batch in source.batches(CHUNK_ROWS) for row in source.decoder(batch)]


class PreparedCache(Protocol):
    """Where prepared stores are kept between runs (the worker's: the artifact store)."""

    def get(self, key: str) -> Path | None:
        """A local folder holding the complete store named `key`, or None."""

    def put(self, key: str, folder: Path) -> Path:
        """Keep `folder` (a complete store) under `key`; returns the folder to read it from."""


# --------------------------------------------------------------------------- the key

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)


def cache_key(fingerprint: str, model_dir: Path, tokenizer: Any, spec: JobSpec) -> str:
    """What decides the tokens: the file's content, the tokenizer's files and template, and the data
    settings the encoder reads. Not the seed or the splits: those are views over the store."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = model_dir / name
        if path.is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    d, t = spec.data, spec.training
    settings = {
        "v": ENCODING_VERSION,
        "file": fingerprint,
        "template": getattr(tokenizer, "chat_template", None),
        "eos": tokenizer.eos_token_id,
        "task": spec.task,
        "method": spec.method,
        "format": d.format,
        "fields": [d.text_field, d.prompt_field, d.completion_field, d.messages_field],
        "max_seq_length": t.max_seq_length,
        "train_on_inputs": t.train_on_inputs,
    }
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:40]


# --------------------------------------------------------------------------- one chunk of rows


@dataclass
class Chunk:
    tokens: np.ndarray
    lengths: np.ndarray
    flags: np.ndarray
    loss: np.ndarray


def encode_chunk(rows: list[dict[str, Any]], first: int, tokenizer: Any, spec: JobSpec, param: str) -> Chunk:
    """`data.normalize_rows` then `data.encode_causal` on these rows (row `first` is the file's
    `first`-th, 0-based), with every tokenization of the chunk in batched calls."""
    d, t = spec.data, spec.training
    fields = data_fields(d)
    named = next((shape for shape in formats.SHAPES if shape == d.format), None)
    checked: set[str] = set()
    eos = tokenizer.eos_token_id
    # Per row: its kind and the positions of its strings in `texts` (with special tokens: `plain`).
    plans: list[tuple[str, Any]] = []
    chat_texts: list[str] = []
    plain: list[str] = []
    bare: list[str] = []
    for n, row in enumerate(rows, start=first + 1):
        shape = named or formats.detect(row, fields)
        if shape in ("alpaca", "sharegpt"):
            try:
                row = formats.to_chat(row, shape, fields).as_row(d.messages_field)
            except formats.RowError as exc:
                raise TrainingError(ErrorCode.INVALID_FILE, f"Row {n} ({shape}): {exc}", param) from exc
        kind = _causal_kind(row, d)
        if kind == "messages":
            plans.append(("messages", _chat_plan(row, tokenizer, spec, checked, chat_texts)))
        elif kind == "prompt_completion":
            plans.append(("prompt_completion", (len(plain), len(bare))))
            plain.append(str(row[d.prompt_field]))
            bare.append(str(row[d.completion_field]))
        else:
            plans.append(("text", len(plain)))
            plain.append(str(row[d.text_field]))
    chat_ids = _ids(tokenizer, chat_texts, special=False)
    plain_ids = _ids(tokenizer, plain, special=True)
    bare_ids = _ids(tokenizer, bare, special=False)
    pieces: list[np.ndarray] = []
    lengths = np.zeros(len(rows), np.int64)
    flags = np.zeros(len(rows), np.uint8)
    loss = np.zeros(len(rows), np.int32)
    for k, (kind, plan) in enumerate(plans):
        if kind == "messages":
            ids, labels = _chat_labels(plan, chat_ids)
        elif kind == "prompt_completion":
            p, c = plain_ids[plan[0]], bare_ids[plan[1]] + ([eos] if eos is not None else [])
            ids = p + c
            labels = (p if t.train_on_inputs else [IGNORE] * len(p)) + c
        else:
            ids = list(plain_ids[plan])
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            labels = list(ids)
        if len(ids) > t.max_seq_length:
            flags[k] |= TRUNCATED
            ids, labels = ids[: t.max_seq_length], labels[: t.max_seq_length]
        loss_tokens = sum(1 for x in labels[1:] if x != IGNORE)
        if loss_tokens == 0:
            flags[k] |= DROPPED
            continue
        a = np.asarray(ids, dtype=np.int32)
        pieces.append(np.where(np.asarray(labels) == IGNORE, -a - 1, a).astype(np.int32))
        lengths[k] = len(ids)
        loss[k] = loss_tokens
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    return Chunk(tokens, lengths, flags, loss)


def _ids(tokenizer: Any, texts: list[str], *, special: bool) -> list[list[int]]:
    """`tokenizer(texts, add_special_tokens=special)["input_ids"]`. A fast tokenizer's Rust backend is
    called directly when nothing the wrapper sets per call (truncation, padding) is configured on it:
    the same ids, without the offsets and the per-encoding Python objects that cost as much again."""
    if not texts:
        return []
    backend: Any = getattr(tokenizer, "_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    if getattr(tokenizer, "is_fast", False) and fast is not None and not (backend.truncation or backend.padding):
        return [e.ids for e in fast(texts, add_special_tokens=special)]
    return [list(x) for x in tokenizer(texts, add_special_tokens=special)["input_ids"]]


def _chat_plan(
    row: dict[str, Any], tokenizer: Any, spec: JobSpec, checked: set[str], texts: list[str]
) -> tuple[int, list[tuple[int, int]] | None]:
    """Render a chat row's strings into `texts`: the conversation, then per trainable assistant turn
    the prefix with a generation prompt and the conversation up to that turn (chat_template.chat_ids'
    renders, as text: `apply_chat_template(tokenize=True)` is the tokenizer on that text, with no
    special tokens added). Returns the conversation's position and each turn's pair of positions."""
    chat, messages = parse_chat_row(row, tokenizer, spec, checked)
    full = len(texts)
    texts.append(render(tokenizer, messages, chat.tools, tokenize=False))
    if spec.training.train_on_inputs:
        return full, None
    turns = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or (chat.trainable is not None and not chat.trainable[i]):
            continue
        texts.append(render(tokenizer, messages[:i], chat.tools, add_generation_prompt=True, tokenize=False))
        prefix = len(texts) - 1
        upto = render(tokenizer, messages[: i + 1], chat.tools, tokenize=False)
        # The conversation up to its last turn is usually the conversation: the same text, the same
        # tokens, so it is not tokenized twice (the longest text of the row).
        if upto != texts[full]:
            texts.append(upto)
        turns.append((prefix, full if upto == texts[full] else len(texts) - 1))
    return full, turns


def _chat_labels(
    plan: tuple[int, list[tuple[int, int]] | None], ids_of: list[list[int]]
) -> tuple[list[int], list[int]]:
    full, turns = plan
    ids = ids_of[full]
    if turns is None:  # train_on_inputs
        return ids, list(ids)
    mask = [False] * len(ids)
    for prefix, upto in turns:
        start, part = len(ids_of[prefix]), ids_of[upto]
        if ids[: len(part)] != part:
            raise TrainingError(
                ErrorCode.INVALID_SPEC,
                "The model's chat template renders earlier turns differently as the conversation grows, "
                "so assistant turns cannot be located; set training.train_on_inputs=true to train on all tokens.",
                "model",
            )
        for k in range(start, len(part)):
            mask[k] = True
    return ids, [i if m else IGNORE for i, m in zip(ids, mask, strict=True)]


# --------------------------------------------------------------------------- many chunks, many processes

_child: dict[str, Any] = {}


def _child_init(model_dir: str, spec_json: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one process per core already
    _child["tokenizer"] = load_tokenizer(Path(model_dir))
    _child["spec"] = JobSpec.model_validate_json(spec_json)


def _child_encode(
    decoder: Callable[[Any], list[dict[str, Any]]], batch: Any, first: int, param: str
) -> tuple[int, Chunk | TrainingError | None, tuple[str, str, str | None] | None]:
    rows = decoder(batch)
    try:
        return len(rows), encode_chunk(rows, first, _child["tokenizer"], _child["spec"], param), None
    except TrainingError as exc:  # sent back as its parts: its constructor's arguments are not its args
        return len(rows), None, (exc.code, exc.message, exc.param)


def workers_available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Progress:
    """ "Preparing data" events, at most one per PROGRESS_EVERY_S: rows done, rate, ETA."""

    def __init__(self, reporter: Reporter, total: int, label: str) -> None:
        self.reporter, self.total, self.label = reporter, total, label
        self.start = self.last = time.monotonic()
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S or self.done >= self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else None
        self.reporter.event(
            f"Preparing {self.label}: {self.done:,} of {self.total:,} rows ({rate:,.0f} rows/s"
            + (f", about {eta:.0f}s left)" if eta is not None else ")"),
            data={
                "phase": "preparing_data",
                "file": self.label,
                "rows_done": self.done,
                "rows_total": self.total,
                "rows_per_second": round(rate, 1),
                "eta_seconds": round(eta, 1) if eta is not None else None,
            },
        )


def build_store(
    source: RowSource,
    model_dir: Path,
    tokenizer: Any,
    spec: JobSpec,
    folder: Path,
    reporter: Reporter,
    *,
    param: str = "training_file",
    workers: int | None = None,
) -> TokenStore:
    """Tokenize every row of `source` into a new store at `folder`."""
    total = source.count()
    n = workers or workers_available()
    progress = Progress(reporter, total, param)
    writer = StoreWriter(folder)
    started = time.monotonic()
    if n <= 1 or total < PARALLEL_MIN_ROWS:
        first = 0
        for batch in source.batches(CHUNK_ROWS):
            rows = source.decoder(batch)
            writer.add(*_fields(encode_chunk(rows, first, tokenizer, spec, param)))
            first += len(rows)
            progress.add(len(rows))
    else:
        _build_parallel(source, model_dir, spec, writer, progress, param, n)
    return writer.finish(
        {"seconds": round(time.monotonic() - started, 3), "workers": n if total >= PARALLEL_MIN_ROWS else 1}
    )


def _fields(c: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return c.tokens, c.lengths, c.flags, c.loss


def _build_parallel(
    source: RowSource, model_dir: Path, spec: JobSpec, writer: StoreWriter, progress: Progress, param: str, n: int
) -> None:
    # spawn, not fork: the worker has torch's and the tokenizer's thread pools running, and a forked
    # child inherits their locks held.
    ctx = mp.get_context("spawn")
    with ctx.Pool(n, initializer=_child_init, initargs=(str(model_dir), spec.model_dump_json())) as pool:
        pending: list[Any] = []
        first = 0

        def drain(keep: int) -> None:
            while len(pending) > keep:
                count, chunk, error = pending.pop(0).get()
                if error is not None:
                    raise TrainingError(*error)
                assert chunk is not None
                writer.add(*_fields(chunk))
                progress.add(count)

        for batch in source.batches(CHUNK_ROWS):
            pending.append(pool.apply_async(_child_encode, (source.decoder, batch, first, param)))
            first += _batch_len(batch)
            drain(4 * n)  # bounded: the file is read as fast as it is tokenized, not into memory
        drain(0)


def _batch_len(batch: Any) -> int:
    return len(batch)  # a batch is a list, one item a row (RowSource.batches)


# --------------------------------------------------------------------------- cached


def prepared_store(
    source: RowSource,
    model_dir: Path,
    tokenizer: Any,
    spec: JobSpec,
    scratch: Path,
    reporter: Reporter,
    cache: PreparedCache | None,
    *,
    param: str = "training_file",
) -> tuple[TokenStore, bool, str | None]:
    """The store of `source`'s rows: from `cache` when an earlier run prepared the same inputs, else
    built (and kept in `cache`). Returns it, whether it was reused, and its key."""
    key = cache_key(source.fingerprint, model_dir, tokenizer, spec) if source.fingerprint else None
    if cache is not None and key is not None:
        found = cache.get(key)
        if found is not None and TokenStore.is_complete(found):
            return TokenStore(found), True, key
    # Per process: the ranks of a multi-device run prepare their rows side by side in one run folder.
    folder = scratch / f"{key or param}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    store = build_store(source, model_dir, tokenizer, spec, folder, reporter, param=param)
    if cache is not None and key is not None:
        kept = cache.put(key, folder)
        if kept != folder:
            shutil.rmtree(folder, ignore_errors=True)
            store = TokenStore(kept)
    return store, False, key

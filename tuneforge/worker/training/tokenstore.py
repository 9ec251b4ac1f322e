"""A file's tokenized rows as a compact, memory-mapped store, and the examples training reads from it.

A store is a folder, one per (file content, tokenizer, template, data settings) (prepare.py names it):

- `tokens.bin`: every row's tokens, concatenated, int32. A token that carries loss is its id; one that
  does not is `-(id + 1)`, so ids and labels fit in 4 bytes a token (labels are always either the id
  or IGNORE, see data.encode_causal).
- `offsets.npy` (int64, rows + 1): row `r` is `tokens[offsets[r]:offsets[r + 1]]`, empty when dropped.
- `flags.npy` (uint8 per row): TRUNCATED, DROPPED.
- `loss.npy` (int32 per row): the row's loss tokens (labels after the one-token shift that are not IGNORE).
- `meta.json`: the counts, and the format's version.

The store holds every row of the file in file order, whatever the split: splits, shuffles and packing
are views over it (`TokenView`), so every seed and split of a sweep reads the same store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from tuneforge.worker.training.encoded import IGNORE, Encoded, Example

FORMAT_VERSION = 1
TRUNCATED = 1
DROPPED = 2
TOKENS = "tokens.bin"
META = "meta.json"


class TokenStore:
    """A finished store, read-only and memory-mapped: its size costs page cache, not worker memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta: dict[str, Any] = json.loads((folder / META).read_text())
        self.offsets: np.ndarray = np.load(folder / "offsets.npy", mmap_mode="r")
        self.flags: np.ndarray = np.load(folder / "flags.npy", mmap_mode="r")
        self.loss: np.ndarray = np.load(folder / "loss.npy", mmap_mode="r")
        n_tokens = int(self.offsets[-1])
        # np.memmap refuses an empty file; a store whose rows were all dropped has none.
        self.tokens: np.ndarray = (
            np.memmap(folder / TOKENS, dtype=np.int32, mode="r", shape=(n_tokens,))
            if n_tokens
            else np.zeros(0, dtype=np.int32)
        )

    @property
    def n_rows(self) -> int:
        return len(self.offsets) - 1

    @staticmethod
    def is_complete(folder: Path) -> bool:
        return (folder / META).is_file()

    def row(self, r: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[r] : self.offsets[r + 1]])

    def view(self, rows: Sequence[int] | np.ndarray, block: int | None) -> Encoded:
        """The rows `rows` (file order indices, in the order training sees them) as an `Encoded`,
        packed into rows of at most `block` tokens when `block` is given: the counts and examples
        `data.encode_causal` (then `data.pack`) makes of the same rows."""
        idx = np.asarray(rows, dtype=np.int64)
        flags = np.asarray(self.flags[idx]) if len(idx) else np.zeros(0, dtype=np.uint8)
        kept = idx[(flags & DROPPED) == 0]
        lengths = np.asarray(self.offsets[kept + 1] - self.offsets[kept]) if len(kept) else np.zeros(0, np.int64)
        out = Encoded(examples=TokenView(self, kept, lengths, block))
        out.truncated = int(np.count_nonzero(flags & TRUNCATED))
        out.dropped = int(np.count_nonzero(flags & DROPPED))
        out.real_tokens = int(lengths.sum())
        out.loss_tokens = int(np.asarray(self.loss[kept]).sum()) if len(kept) else 0
        return out


def decode(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stored tokens -> (ids, labels)."""
    masked = tokens < 0
    ids = np.where(masked, -tokens - 1, tokens)
    return ids, np.where(masked, IGNORE, tokens)


def encode(ids: Sequence[int], labels: Sequence[int]) -> np.ndarray:
    """(ids, labels) -> stored tokens. Labels must be each id or IGNORE."""
    a = np.asarray(ids, dtype=np.int32)
    return np.where(np.asarray(labels, dtype=np.int64) == IGNORE, -a - 1, a).astype(np.int32)


class TokenView(Sequence[Example]):
    """Examples read from a store on demand, as the lists `collate` takes: a batch costs its own
    tokens, the dataset only its memory map and 8 bytes a row."""

    def __init__(self, store: TokenStore, rows: np.ndarray, lengths: np.ndarray, block: int | None) -> None:
        self.store = store
        self.rows = rows
        self.block = block
        self.row_lengths = lengths
        # Packed: example k is rows[starts[k]:starts[k + 1]], filled greedily in order as data.pack does.
        self.starts: np.ndarray | None = _pack_starts(lengths, block) if block is not None else None

    def __len__(self) -> int:
        return len(self.rows) if self.starts is None else len(self.starts) - 1

    @overload
    def __getitem__(self, i: int) -> Example: ...

    @overload
    def __getitem__(self, i: slice) -> list[Example]: ...

    def __getitem__(self, i: int | slice) -> Example | list[Example]:
        if isinstance(i, slice):
            return [self._example(k) for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._example(i)

    def __iter__(self) -> Iterator[Example]:
        return (self._example(k) for k in range(len(self)))

    def lengths(self) -> list[int]:
        """Every example's token count, without reading a token."""
        if self.starts is None:
            return [int(n) for n in self.row_lengths]
        cum = np.concatenate([[0], np.cumsum(self.row_lengths)])
        return [int(n) for n in cum[self.starts[1:]] - cum[self.starts[:-1]]]

    def _example(self, k: int) -> Example:
        if self.starts is None:
            ids, labels = decode(self.store.row(int(self.rows[k])))
            return {"input_ids": ids.tolist(), "labels": labels.tolist()}
        parts = [self.store.row(int(r)) for r in self.rows[self.starts[k] : self.starts[k + 1]]]
        ids, labels = decode(np.concatenate(parts))
        # The first label of each example would otherwise be predicted from the previous one (data.pack).
        firsts = np.cumsum([0] + [len(p) for p in parts[:-1]])
        labels[firsts] = IGNORE
        positions = np.concatenate([np.arange(len(p)) for p in parts])
        return {"input_ids": ids.tolist(), "labels": labels.tolist(), "position_ids": positions.tolist()}


def _pack_starts(lengths: np.ndarray, block: int) -> np.ndarray:
    starts = [0]
    used = 0
    for k, n in enumerate(lengths.tolist()):
        if used and used + n > block:
            starts.append(k)
            used = 0
        used += n
    if used or not len(lengths):
        starts.append(len(lengths))
    return np.asarray(starts if len(lengths) else [0], dtype=np.int64)


def example_lengths(examples: Sequence[Example]) -> list[int]:
    """Each example's token count (`input_ids`), read from a store's offsets when it is one."""
    if isinstance(examples, TokenView):
        return examples.lengths()
    return [len(ex["input_ids"]) for ex in examples]


class StoreWriter:
    """Appends encoded rows in file order; `finish` makes the folder a store (meta.json last)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.fh = (folder / TOKENS).open("wb")
        self.lengths: list[np.ndarray] = []
        self.flags: list[np.ndarray] = []
        self.loss: list[np.ndarray] = []

    def add(self, tokens: np.ndarray, lengths: np.ndarray, flags: np.ndarray, loss: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(tokens, dtype=np.int32).tobytes())
        self.lengths.append(lengths.astype(np.int64))
        self.flags.append(flags.astype(np.uint8))
        self.loss.append(loss.astype(np.int32))

    def finish(self, meta: dict[str, Any]) -> TokenStore:
        self.fh.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        np.save(self.folder / "offsets.npy", offsets)
        np.save(self.folder / "flags.npy", np.concatenate(self.flags) if self.flags else np.zeros(0, np.uint8))
        np.save(self.folder / "loss.npy", np.concatenate(self.loss) if self.loss else np.zeros(0, np.int32))
        full = {"version": FORMAT_VERSION, "rows": len(lengths), "tokens": int(offsets[-1]), **meta}
        (self.folder / META).write_text(json.dumps(full, indent=1))
        return TokenStore(self.folder)

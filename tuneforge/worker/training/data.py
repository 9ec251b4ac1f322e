"""Rows -> splits -> token tensors -> batches. Pure functions; no I/O but what they are given.

The splits and the batch order serve every method; the encoders and `collate` are supervised training's
(methods/supervised.py), per task and data shape (`messages` rows through chat_template.py).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.contract import formats
from tuneforge.contract.spec import DataSpec, JobSpec
from tuneforge.contract.spec.data import data_fields
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.chat_template import encode_chat
from tuneforge.worker.training.encoded import IGNORE, Encoded, Example
from tuneforge.worker.training.errors import TrainingError


@dataclass
class Splits:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]


def make_splits(rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]] | None, spec: JobSpec) -> Splits:
    """Shuffle with the job's seed, then hold out validation/test fractions (stratified by label
    for classification, so a rare class appears in every split)."""
    d = spec.data
    rng = random.Random(d.shuffle_seed if d.shuffle_seed is not None else spec.seed)
    val_frac = 0.0 if validation_rows is not None else (d.validation_split or 0.0)
    test_frac = d.test_split
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    if spec.task == "sequence_classification":
        for r in rows:
            groups[str(r.get(d.label_field))].append(r)
    else:
        groups[None] = list(rows)
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for key in sorted(groups, key=str):
        g = groups[key]
        rng.shuffle(g)
        n_test = round(len(g) * test_frac)
        n_val = round(len(g) * val_frac)
        if len(g) - n_test - n_val < 1:
            n_test = n_val = 0
        test.extend(g[:n_test])
        val.extend(g[n_test : n_test + n_val])
        train.extend(g[n_test + n_val :])
    rng.shuffle(train)
    if validation_rows is not None:
        val = list(validation_rows)
    if not train:
        raise TrainingError(
            ErrorCode.INVALID_FILE, "No training rows remain after the validation/test split.", "training_file"
        )
    return Splits(train=train, validation=val, test=test)


@dataclass
class SplitIndices:
    train: list[int]
    validation: list[int]
    test: list[int]


def split_indices(n_rows: int, has_validation_file: bool, spec: JobSpec) -> SplitIndices:
    """`make_splits` of an unlabeled task as row positions: the same draws of the same generator, so
    `[rows[i] for i in split_indices(...).train] == make_splits(rows, ...).train` (a prepared store's
    rows are split without reading a row)."""
    d = spec.data
    rng = random.Random(d.shuffle_seed if d.shuffle_seed is not None else spec.seed)
    val_frac = 0.0 if has_validation_file else (d.validation_split or 0.0)
    g = list(range(n_rows))
    rng.shuffle(g)  # random.shuffle's draws depend on the length only, not on what is shuffled
    n_test = round(n_rows * d.test_split)
    n_val = round(n_rows * val_frac)
    if n_rows - n_test - n_val < 1:
        n_test = n_val = 0
    train = g[n_test + n_val :]
    rng.shuffle(train)
    if not train:
        raise TrainingError(
            ErrorCode.INVALID_FILE, "No training rows remain after the validation/test split.", "training_file"
        )
    return SplitIndices(train, [] if has_validation_file else g[n_test : n_test + n_val], g[:n_test])


# --------------------------------------------------------------------------- causal LM


def normalize_rows(rows: list[dict[str, Any]], spec: JobSpec, param: str = "training_file") -> list[dict[str, Any]]:
    """causal_lm rows in alpaca or ShareGPT shape (detected, or named by `data.format`) become OpenAI
    chat rows, so everything after this sees `messages`, `prompt_completion` or `text` rows."""
    if spec.task != "causal_lm":
        return rows
    d = spec.data
    fields = data_fields(d)
    named = next((shape for shape in formats.SHAPES if shape == d.format), None)
    out = []
    for n, row in enumerate(rows, start=1):
        shape = named or formats.detect(row, fields)
        if shape in ("alpaca", "sharegpt"):
            try:
                row = formats.to_chat(row, shape, fields).as_row(d.messages_field)
            except formats.RowError as exc:
                raise TrainingError(ErrorCode.INVALID_FILE, f"Row {n} ({shape}): {exc}", param) from exc
        out.append(row)
    return out


def _causal_kind(row: dict[str, Any], d: DataSpec) -> str:
    kind = formats.detect(row, data_fields(d))
    if kind in ("messages", "prompt_completion", "text"):
        return kind
    raise TrainingError(
        ErrorCode.INVALID_FILE,
        f"A row has none of '{d.text_field}', '{d.prompt_field}'+'{d.completion_field}', '{d.messages_field}', "
        "alpaca's 'instruction'+'output' or ShareGPT's 'conversations'.",
        "training_file",
    )


def encode_causal(rows: list[dict[str, Any]], tokenizer: Any, spec: JobSpec) -> Encoded:
    d, t = spec.data, spec.training
    eos = tokenizer.eos_token_id
    examples: list[Example] = []
    out = Encoded(examples=examples)
    checked: set[str] = set()
    for row in rows:
        kind = _causal_kind(row, d)
        if kind == "messages":
            ids, labels = encode_chat(row, tokenizer, spec, checked)
        elif kind == "prompt_completion":
            # The tokenizer's own special tokens (a BOS, for most causal LMs) go on the prompt only.
            p = list(tokenizer(str(row[d.prompt_field]))["input_ids"])
            c = list(tokenizer(str(row[d.completion_field]), add_special_tokens=False)["input_ids"])
            c += [eos] if eos is not None else []
            ids = p + c
            labels = (p if t.train_on_inputs else [IGNORE] * len(p)) + c
        else:
            ids = list(tokenizer(str(row[d.text_field]))["input_ids"])
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            labels = list(ids)
        if len(ids) > t.max_seq_length:
            out.truncated += 1
            ids, labels = ids[: t.max_seq_length], labels[: t.max_seq_length]
        loss_tokens = sum(1 for x in labels[1:] if x != IGNORE)
        if loss_tokens == 0:
            out.dropped += 1  # nothing to learn from once truncated
            continue
        out.real_tokens += len(ids)
        out.loss_tokens += loss_tokens
        examples.append({"input_ids": ids, "labels": labels})
    if t.packing:
        out.examples = pack(examples, t.max_seq_length)
    return out


def pack(examples: list[dict[str, Any]], block: int) -> list[dict[str, Any]]:
    """Concatenate examples into rows of at most `block` tokens; position ids restart at each
    example so attention positions stay as if it were alone (no padding is wasted)."""
    packed: list[dict[str, Any]] = []
    cur: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
    for ex in examples:
        n = len(ex["input_ids"])
        if cur["input_ids"] and len(cur["input_ids"]) + n > block:
            packed.append(cur)
            cur = {"input_ids": [], "labels": [], "position_ids": []}
        cur["input_ids"] += ex["input_ids"]
        # The first label of each example would otherwise be predicted from the previous one.
        cur["labels"] += [IGNORE, *list(ex["labels"][1:])]
        cur["position_ids"] += list(range(n))
    if cur["input_ids"]:
        packed.append(cur)
    return packed


# --------------------------------------------------------------------------- classification / regression


def label_names(rows: list[dict[str, Any]], spec: JobSpec) -> list[str]:
    names = sorted({str(r.get(spec.data.label_field)) for r in rows if r.get(spec.data.label_field) is not None})
    if len(names) < 2:
        raise TrainingError(
            ErrorCode.INVALID_FILE, "sequence_classification needs at least two classes.", "training_file"
        )
    return names


def encode_labeled(
    rows: list[dict[str, Any]],
    tokenizer: Any,
    spec: JobSpec,
    labels: list[str] | None,
    norm: tuple[float, float] | None,
) -> Encoded:
    d, t = spec.data, spec.training
    index = {name: i for i, name in enumerate(labels or [])}
    examples: list[Example] = []
    out = Encoded(examples=examples, label_names=list(labels or []))
    for row in rows:
        text, raw = row.get(d.text_field), row.get(d.label_field)
        if text is None or raw is None:
            out.dropped += 1
            continue
        ids = tokenizer(str(text), truncation=False)["input_ids"]
        if len(ids) > t.max_seq_length:
            out.truncated += 1
            ids = [*ids[: t.max_seq_length - 1], ids[-1]]  # keep the closing special token
        if spec.task == "sequence_classification":
            if str(raw) not in index:
                out.dropped += 1  # a class seen only in validation/test cannot be predicted
                continue
            target: int | float = index[str(raw)]
        else:
            assert norm is not None
            target = (float(raw) - norm[0]) / norm[1]
        out.real_tokens += len(ids)
        examples.append({"input_ids": ids, "labels": target})
    return out


def regression_norm(rows: list[dict[str, Any]], spec: JobSpec) -> tuple[float, float]:
    values = [float(r[spec.data.label_field]) for r in rows if r.get(spec.data.label_field) is not None]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
    return mean, std if std > 0 else 1.0


# --------------------------------------------------------------------------- batching


def collate(batch: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Examples of one row each (`input_ids`, `labels`, and `position_ids` if packed) as padded tensors."""
    width = max(len(ex["input_ids"]) for ex in batch)
    n = len(batch)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    out: dict[str, torch.Tensor] = {}
    seq_labels = isinstance(batch[0]["labels"], list)
    labels = torch.full((n, width), IGNORE, dtype=torch.long) if seq_labels else None
    positions = torch.zeros((n, width), dtype=torch.long) if "position_ids" in batch[0] else None
    for i, ex in enumerate(batch):
        k = len(ex["input_ids"])
        input_ids[i, :k] = torch.tensor(ex["input_ids"])
        attention[i, :k] = 1
        if labels is not None:
            labels[i, :k] = torch.tensor(ex["labels"])
        if positions is not None:
            positions[i, :k] = torch.tensor(ex["position_ids"])
    out["input_ids"] = input_ids
    if positions is None:
        out["attention_mask"] = attention
    # Packed rows go without an attention mask: from position ids that restart at each example,
    # transformers builds a block-diagonal mask (masking_utils.find_packed_sequence_indices), so an
    # example never attends to its neighbours in the row. Padding gets position 0, a segment of its own.
    if labels is not None:
        out["labels"] = labels
    else:
        kind = torch.long if isinstance(batch[0]["labels"], int) else torch.float
        out["labels"] = torch.tensor([ex["labels"] for ex in batch], dtype=kind)
    if positions is not None:
        out["position_ids"] = positions
    return out


def batch_order(
    n_examples: int, batch_size: int, seed: int, epoch: int, lengths: list[int] | None = None
) -> list[list[int]]:
    """Deterministic per-epoch batches, so a resumed attempt can skip to the same position.

    With `lengths`, examples of similar length share a batch (sorted within shuffled windows of 50
    batches, then the batches are shuffled), which cuts padding without making the order
    predictable."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    perm = torch.randperm(n_examples, generator=g).tolist()
    if lengths is None:
        return [perm[i : i + batch_size] for i in range(0, n_examples, batch_size)]
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, n_examples, window):
        chunk = sorted(perm[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

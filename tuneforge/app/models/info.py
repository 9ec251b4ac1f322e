"""What a model folder under the models root is, read from its files without loading torch.

`describe()` reads `config.json`, the safetensors headers (for the parameter count) and the tokenizer
files (for the chat template). The API lists models with it and `tuneforge models import` prints it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

# Config keys that name the context length, in the order transformers' model families use them.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class ModelInfo:
    architecture: str | None
    model_type: str | None
    parameters: int | None
    context_length: int | None
    chat_template: bool


def describe(model_dir: Path) -> ModelInfo:
    cfg = _read_json(model_dir / "config.json")
    archs = cfg.get("architectures")
    architecture = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    model_type = cfg.get("model_type")
    context = next((v for k in CONTEXT_KEYS if isinstance(v := cfg.get(k), int)), None)
    return ModelInfo(
        architecture=architecture,
        model_type=model_type if isinstance(model_type, str) else None,
        parameters=count_parameters(model_dir),
        context_length=context,
        chat_template=has_chat_template(model_dir),
    )


def count_parameters(model_dir: Path) -> int | None:
    """The number of parameters stored in the folder's safetensors files (tied weights once)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        header = safetensors_header(path)
        if header is None:
            return None
        for name, entry in header.items():
            if name != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("shape"), list):
                total += prod(int(d) for d in entry["shape"])
    return total


def safetensors_header(path: Path) -> dict[str, object] | None:
    """A safetensors file's JSON header (8-byte little-endian length, then JSON), or None if unreadable."""
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                return None
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    return bool(_read_json(model_dir / "tokenizer_config.json").get("chat_template"))


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

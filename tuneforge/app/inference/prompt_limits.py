"""What the API checks in a prompt before any worker sees it: text a tokenizer cannot take, and
prompts that cannot fit the model's context whatever their tokenization.

**Lone surrogates.** JSON may carry `"\\udfff"`, which Python decodes to a str no UTF-8 encoder (nor
the Rust tokenizers) accepts; the worker failed with a TypeError (a 500). Here it is a 400 naming
the field, e.g. `messages[0].content`.

**Too long for the context, measured in bytes.** Tokenizing a 12 MB prompt held the shared inference
worker for 38 s before it answered `context_length_exceeded`. No token of a model's vocabulary
stands for more than its longest token's bytes, so a prompt of B bytes is at least
ceil(B / longest) tokens: once B >= context x longest, the prompt cannot fit, and the API answers
the same 400 at once, without tokenizing anything. The bound is computed once per model (its
tokenizer.json and config.json, cached by their modification times) and only where it is exact:

- each piece of the input must reach some token, so the tokenizer may not drop or shrink text
  before its model sees it: its normalizer may only prepend or replace with something no shorter
  (SentencePiece's `▁`), its pre-tokenizer may split but not remove (no `Whitespace`, no `Strip`);
- no token may stand for an unbounded run of unknown text: the vocabulary is byte-level (GPT-2,
  Llama 3, SmolLM2) or falls back to bytes (Llama 2, Mistral);
- the context comes from the same config.json keys the worker reads (generate.context_length).

Any other tokenizer (NFC/NFKC normalizers, WordPiece's `[UNK]` for a whole word, no tokenizer.json)
gets no bound: its prompts are measured by the worker as before, within the body cap. Chat messages
count with surrounding whitespace stripped (chat templates commonly `trim` them), and every message
is assumed to reach the template; what the template adds only makes the prompt longer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import InvalidRequest
from tuneforge.app.inference.schemas import ChatCompletionRequest, CompletionRequest
from tuneforge.app.jobs.model_path import resolve_model
from tuneforge.contract.spec import SpecError

# After json.loads, a surrogate code point left in a str is always a lone one (pairs are combined).
SURROGATE = re.compile("[\ud800-\udfff]")
# The keys generate.context_length reads from a loaded model's config, in the same order.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
# Pre-tokenizers that split text without removing any of it.
KEEPING_PRE_TOKENIZERS = frozenset(("ByteLevel", "Metaspace", "Digits", "Punctuation", "UnicodeScripts", "Split"))


def lone_surrogate_field(body: ChatCompletionRequest | CompletionRequest) -> str | None:
    """The first field that holds a lone surrogate, named as a client wrote it, or None."""
    fields: list[tuple[str, str | None]] = []
    if isinstance(body, ChatCompletionRequest):
        for i, message in enumerate(body.messages):
            if isinstance(message.content, str):
                fields.append((f"messages[{i}].content", message.content))
            elif message.content is not None:
                fields += [(f"messages[{i}].content[{j}].text", part.text) for j, part in enumerate(message.content)]
            fields.append((f"messages[{i}].name", message.name))
    else:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        fields += [("prompt" if isinstance(body.prompt, str) else f"prompt[{i}]", p) for i, p in enumerate(prompts)]
    fields += [(f"stop[{i}]", s) for i, s in enumerate(body.stops())]
    fields.append(("user", body.user))
    return next((name for name, text in fields if text is not None and SURROGATE.search(text)), None)


def check_text(body: ChatCompletionRequest | CompletionRequest) -> None:
    field = lone_surrogate_field(body)
    if field is not None:
        raise InvalidRequest(
            f"{field} contains a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair), which is "
            "not text any tokenizer can take. Send valid Unicode.",
            param=field,
            code="invalid_text",
        )


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def prompt_bytes(body: ChatCompletionRequest | CompletionRequest) -> int:
    """The bytes of text a tokenizer must cover at least (lone surrogates were refused before)."""
    if isinstance(body, ChatCompletionRequest):
        return sum(_utf8_len(m.text().strip()) for m in body.messages)
    return _utf8_len(body.text())


@dataclass(frozen=True)
class PromptBound:
    context: int  # tokens
    longest_token: int  # bytes of input text one token can stand for, at most

    @property
    def max_bytes(self) -> int:
        """A prompt of this many bytes or more is at least `context` tokens."""
        return self.context * self.longest_token


def check_length(body: ChatCompletionRequest | CompletionRequest, bound: PromptBound | None) -> None:
    if bound is None:
        return
    size = prompt_bytes(body)
    if size >= bound.max_bytes:
        param = "messages" if isinstance(body, ChatCompletionRequest) else "prompt"
        raise InvalidRequest(
            f"The prompt is {size} bytes, so at least {math.ceil(size / bound.longest_token)} tokens (no token "
            f"of this model stands for more than {bound.longest_token} bytes); this model's context is "
            f"{bound.context} tokens, which must also hold at least one generated token. Shorten the prompt.",
            param=param,
            code="context_length_exceeded",
        )


def bound_for(settings: Settings, base: str) -> PromptBound | None:
    """The bound of a base model by name (the adapters Tuneforge trains keep their base's tokenizer).
    Reads files: call it from a thread, not the event loop."""
    try:
        model_dir = resolve_model(settings, base)
    except (SpecError, OSError):
        return None
    if model_dir is None:  # a Hub id: the worker downloads it, and measures its prompts
        return None
    try:
        stamps = tuple((model_dir / f).stat().st_mtime_ns for f in ("config.json", "tokenizer.json"))
    except OSError:
        return None
    return _bound(str(model_dir), stamps)


@lru_cache(maxsize=64)
def _bound(model_dir: str, _stamps: tuple[int, ...]) -> PromptBound | None:
    root = Path(model_dir)
    try:
        config = json.loads((root / "config.json").read_text())
        tokenizer = json.loads((root / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return None
    context = next((v for k in CONTEXT_KEYS if isinstance(v := config.get(k), int) and v > 0), None)
    longest = longest_token_bytes(tokenizer, _added_tokens(root))
    if context is None or longest is None:
        return None
    return PromptBound(context=context, longest_token=longest)


def _added_tokens(root: Path) -> list[str]:
    """Added tokens that tokenizer_config.json declares (tokenizer.json usually lists the same)."""
    try:
        config = json.loads((root / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return []
    decoder = config.get("added_tokens_decoder") if isinstance(config, dict) else None
    if not isinstance(decoder, dict):
        return []
    return [str(t["content"]) for t in decoder.values() if isinstance(t, dict) and "content" in t]


def _parts(component: Any) -> list[dict[str, Any]]:
    """A normalizer or pre-tokenizer as its list of steps (a Sequence flattened)."""
    if component is None:
        return []
    if not isinstance(component, dict):
        return [{"type": "?"}]
    if component.get("type") == "Sequence":
        steps = component.get("normalizers") or component.get("pretokenizers") or []
        return [p for step in steps for p in _parts(step)]
    return [component]


def _keeps_text(normalizer: Any, pre_tokenizer: Any) -> bool:
    for step in _parts(normalizer):
        kind = step.get("type")
        if kind in ("Prepend", "ByteLevel"):
            continue
        if kind == "Replace":
            pattern, content = step.get("pattern") or {}, step.get("content")
            grows = isinstance(content, str) and len(content.encode()) >= len(str(pattern.get("String")).encode())
            if "String" in pattern and grows:
                continue
        return False
    for step in _parts(pre_tokenizer):
        kind = step.get("type")
        if kind not in KEEPING_PRE_TOKENIZERS or (kind == "Split" and step.get("behavior") == "Removed"):
            return False
    return True


def longest_token_bytes(tokenizer: dict[str, Any], extra_tokens: Sequence[str] = ()) -> int | None:
    """The most input bytes one token can stand for, or None when the tokenizer gives no such bound."""
    model = tokenizer.get("model") or {}
    normalizer, pre_tokenizer = tokenizer.get("normalizer"), tokenizer.get("pre_tokenizer")
    if not _keeps_text(normalizer, pre_tokenizer):
        return None
    byte_level = any(p.get("type") == "ByteLevel" for p in _parts(pre_tokenizer) + _parts(normalizer))
    kind, byte_fallback = model.get("type"), bool(model.get("byte_fallback"))
    if kind == "BPE" and isinstance(model.get("vocab"), dict):
        # Unknown text must come out as bytes, or as one unknown token per character at most.
        if not (byte_fallback or (byte_level and not model.get("fuse_unk"))):
            return None
        pieces: list[str] = list(model["vocab"])
    elif kind == "Unigram" and isinstance(model.get("vocab"), list) and byte_fallback:
        pieces = [str(entry[0]) for entry in model["vocab"]]
    else:
        return None
    # A byte-level vocabulary writes each byte as one character; other vocabularies are text (where
    # `▁` (3 bytes) stands for a space and `<0x41>` for one byte, so this over-counts: still a bound).
    longest = max((len(p) if byte_level else _utf8_len(p) for p in pieces), default=0)
    added = [str(t.get("content", "")) for t in tokenizer.get("added_tokens") or [] if isinstance(t, dict)]
    longest = max([longest, *(_utf8_len(t) for t in [*added, *extra_tokens])])
    return longest or None

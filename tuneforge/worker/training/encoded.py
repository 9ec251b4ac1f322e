"""What rows become: tokenized examples and the counts that describe them.

A module of its own, below every encoder (data.py, chat_template.py, each method under methods/) and
every loss, so that they share these names without importing one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The label of a token that is not trained on (PyTorch's and transformers' ignore_index).
IGNORE = -100

# One tokenized example: `input_ids`, `labels` (token ids, or a class index / regression target),
# `position_ids` for packed rows, and whatever else a method's batches need (methods/).
Example = dict[str, Any]


@dataclass
class Encoded:
    # A list, or a view over a prepared store (tokenstore.TokenView) read batch by batch.
    examples: Sequence[Example]
    truncated: int = 0
    dropped: int = 0
    real_tokens: int = 0
    # Tokens whose prediction is trained on (labels not ignored, after the one-token shift).
    loss_tokens: int = 0
    label_names: list[str] = field(default_factory=list)

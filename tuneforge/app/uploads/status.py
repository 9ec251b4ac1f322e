"""An upload's status: OpenAI's four values. Only `pending` moves (to any of the other three)."""

from __future__ import annotations

from enum import StrEnum


class UploadStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

from __future__ import annotations

from tuneforge.contract.status import ErrorCode, StopReason


class TrainingError(Exception):
    """A failure with an OpenAI-style error code: user errors (invalid_spec, invalid_file, oom,
    nan_loss) are told apart from system errors (internal)."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


class StopTraining(Exception):
    """Raised out of the loop when the job was cancelled, its lease lost, or the worker is stopping."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason)
        self.reason = reason

from __future__ import annotations


class TrainingError(Exception):
    """A failure with an OpenAI-style error code: user errors (invalid_spec, invalid_file, oom,
    nan_loss) are told apart from system errors (internal)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


class StopTraining(Exception):
    """Raised out of the loop when the job was cancelled or its lease lost."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

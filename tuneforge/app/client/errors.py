"""Exit codes a script can tell apart, and the error that carries one (docs/cli.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1  # the API refused the request (400, 409, 413, 422, 429) or the server lacks the feature
    USAGE = 2  # bad flags or a spec that fails validation before anything is sent
    AUTH = 3  # 401 or 403: a missing, wrong or revoked key, or one without the right
    NOT_FOUND = 4  # 404: no such job, file or model (for this key's organization)
    SERVER = 5  # 5xx, or the server could not be reached
    JOB_FAILED = 6  # `jobs watch` / `create --watch`: the job failed
    JOB_CANCELLED = 7  # `jobs watch` / `create --watch`: the job was cancelled


class CliError(Exception):
    def __init__(self, message: str, code: ExitCode = ExitCode.REFUSED, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


def exit_code_for_status(status: int) -> ExitCode:
    if status in (401, 403):
        return ExitCode.AUTH
    if status == 404:
        return ExitCode.NOT_FOUND
    if status >= 500:
        return ExitCode.SERVER
    return ExitCode.REFUSED

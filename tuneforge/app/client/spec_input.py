"""The body of `jobs create`: a spec file, `--set` overrides and flags, validated with the server's
own `JobCreate` (and its `resolve()`) before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tuneforge.app.client.errors import CliError, ExitCode
from tuneforge.app.jobs.request import JobCreate
from tuneforge.contract.spec import SpecError


def load_spec_file(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise CliError(f"cannot read --spec {path}: {exc}", ExitCode.USAGE, param="--spec") from exc
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as exc:  # yaml.YAMLError and json's errors are both ValueErrors
        raise CliError(f"--spec {path} is not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}", ExitCode.USAGE) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"--spec {path} must hold a mapping (the request body's fields)", ExitCode.USAGE)
    return data


def parse_value(raw: str) -> Any:
    """`1e-4` -> 0.0001, `true` -> True, `[\"q_proj\"]` -> a list; anything else stays a string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def apply_set(body: dict[str, Any], assignment: str) -> None:
    path, sep, raw = assignment.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
        raise CliError(f"--set wants key.path=value, got {assignment!r}", ExitCode.USAGE, param="--set")
    node = body
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise CliError(f"--set {path}: {key} is not a block", ExitCode.USAGE, param=path)
        node = child
    node[keys[-1]] = parse_value(raw)


def build_body(
    *,
    model: str,
    training_file: str,
    spec: str | None,
    sets: list[str],
    validation_file: str | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    metadata: list[str] | None = None,
) -> dict[str, Any]:
    body = load_spec_file(spec) if spec else {}
    body.update({"model": model, "training_file": training_file})
    for name, value in (("validation_file", validation_file), ("suffix", suffix), ("seed", seed)):
        if value is not None:
            body[name] = value
    for item in metadata or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--metadata wants key=value, got {item!r}", ExitCode.USAGE, param="--metadata")
        body.setdefault("metadata", {})[key] = value
    for assignment in sets:
        apply_set(body, assignment)
    validate(body)
    return body


def validate(body: dict[str, Any]) -> None:
    """Exactly the server's checks that need no database: field types, ranges, contradictions."""
    from tuneforge.app.core.errors import describe_validation

    try:
        JobCreate.model_validate(body).resolve()
    except ValidationError as exc:
        message, param = describe_validation(exc.errors())
        raise CliError(message, ExitCode.USAGE, param=param) from exc
    except SpecError as exc:
        raise CliError(f"{exc.param}: {exc.message}", ExitCode.USAGE, param=exc.param) from exc

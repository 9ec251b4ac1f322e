"""Experiment trackers a job logs to: OpenAI's `wandb` integration, and `mlflow` (a Tuneforge extension of the
same shape). The worker logs the metric series, the hyperparameters and the final metrics from a background
thread; a tracker that is down or slow never fails or slows the job (tuneforge/worker/tracking/)."""

from __future__ import annotations

from typing import Annotated, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from tuneforge.contract.spec.base import SpecError, Strict

# W&B refuses these in project and entity names.
_WANDB_FORBIDDEN = set("/\\#?%:") | {" ", "\t", "\n"}


class WandbSettings(Strict):
    """OpenAI's `wandb` block. Runs are written offline by default (TUNEFORGE_WANDB_MODE) under the worker's
    TUNEFORGE_WANDB_DIR, for `wandb sync` to upload (docs/deployment.md)."""

    project: str = Field(min_length=1, max_length=128, description="The W&B project the run is created under.")
    name: str | None = Field(
        None, min_length=1, max_length=128, description="The run's display name; the job id when omitted."
    )
    entity: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="The W&B team or user; the API key's default entity when omitted.",
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        max_length=32,
        description="Tags for the run. Tuneforge adds `tuneforge/finetune`, `tuneforge/<base model>` and "
        "`tuneforge/<job id>`, as OpenAI adds its own.",
    )

    @field_validator("project", "entity")
    @classmethod
    def _wandb_name(cls, value: str | None) -> str | None:
        if value is not None and (bad := sorted(_WANDB_FORBIDDEN & set(value))):
            raise ValueError(f"W&B names cannot contain {' '.join(repr(c) for c in bad)}")
        return value


class MlflowSettings(Strict):
    """Tuneforge's extension. The run is tagged `tuneforge.job_id`; a resumed attempt logs to the same run."""

    tracking_uri: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="http(s) URL of an MLflow tracking server this deployment allows "
        "(TUNEFORGE_MLFLOW_TRACKING_URIS); the first of those when omitted. Credentials never go in the URL: "
        "the worker's MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN carry them.",
    )
    experiment: str = Field(
        "tuneforge", min_length=1, max_length=256, description="The experiment, created when it does not exist."
    )
    run_name: str | None = Field(
        None, min_length=1, max_length=250, description="The run's name; the job id when omitted."
    )

    @field_validator("tracking_uri")
    @classmethod
    def _http_only(cls, uri: str | None) -> str | None:
        # MLflow also takes file:, sqlite: or databricks URIs; on a worker those would write to its disk or
        # reach what it can reach, so only a server over http(s) is accepted, and an allow-list decides which.
        if uri is None:
            return None
        if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri):  # urlsplit drops tabs and newlines silently
            raise ValueError("tracking_uri must not contain spaces or control characters")
        try:
            parts = urlsplit(uri)
            host = parts.hostname  # raises ValueError for `http://[1.2.3.4]/` on some Pythons
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise ValueError(f"tracking_uri is not a valid URL ({exc})") from exc
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("tracking_uri must be an http:// or https:// URL of an MLflow tracking server")
        if parts.username or parts.password:
            raise ValueError("tracking_uri must not carry credentials (they would be stored with the job)")
        return uri


IntegrationType = Literal["wandb", "mlflow"]


class Integration(Strict):
    """One tracker: a type, and the block named by the type (as OpenAI's `method`)."""

    type: IntegrationType = Field(description="`wandb` (OpenAI's shape) or `mlflow` (a Tuneforge extension).")
    wandb: WandbSettings | None = Field(None, description="For type `wandb`.")
    mlflow: MlflowSettings | None = Field(None, description="For type `mlflow`.")

    @model_validator(mode="after")
    def _block_of_type(self) -> Self:
        for other in get_args(IntegrationType):
            if other != self.type and getattr(self, other) is not None:
                raise SpecError(other, f"a {other} block does not go with type={self.type}")
        if getattr(self, self.type) is None:
            raise SpecError(self.type, f"type={self.type} needs its `{self.type}` block")
        return self


def _key(uri: str) -> tuple[str, str, int, str]:
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def tracking_uri_allowed(uri: str, allowed: list[str]) -> bool:
    """Whether `uri` is one of the operator's MLflow servers: same scheme, host and port as an entry, and a path
    at or under the entry's. Compared parsed, so `http://mlflow.internal.evil.example` is not `http://mlflow.internal`."""
    try:
        scheme, host, port, path = _key(uri)
    except ValueError:
        return False
    for entry in allowed:
        try:
            e_scheme, e_host, e_port, e_path = _key(entry)
        except ValueError:
            continue
        if (scheme, host, port) == (e_scheme, e_host, e_port) and (path == e_path or path.startswith(e_path + "/")):
            return True
    return False

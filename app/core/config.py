"""One settings object for the API, the worker and the CLI.

Every value comes from an environment variable with the prefix ``TUNEFORGE_``. The defaults are the
embedded, single-box setup (SQLite + a server-less broker under ``data_dir``); ``env=production``
refuses the defaults that are only safe on a laptop.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", extra="ignore")

    env: Literal["local", "production"] = Field(
        "local", description="`production` refuses SQLite, the server-less broker and open CORS."
    )
    data_dir: Path = Field(Path(".tuneforge"), description="Uploads, artifacts and embedded databases.")
    models_dir: Path | None = Field(
        None, description="The only directory base models load from. Defaults to `<data_dir>/models`."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL. Defaults to SQLite at `<data_dir>/tuneforge.db`."
    )
    broker_url: str | None = Field(
        None, description="Celery broker. Defaults to kombu's SQLAlchemy transport at `<data_dir>/broker.db`."
    )
    queue: str = Field("gpu", description="Celery queue that training workers consume.")

    max_upload_mb: int = Field(100, gt=0, description="Largest accepted upload, enforced while streaming.")
    max_upload_rows: int = Field(1_000_000, gt=0)
    max_line_bytes: int = Field(1_000_000, gt=0, description="Longest accepted JSONL line / CSV row.")

    lease_seconds: int = Field(120, ge=10, description="How long a worker's claim on a job lasts unrenewed.")
    heartbeat_seconds: float = Field(5.0, gt=0, description="How often a worker renews its lease.")
    metrics_flush_seconds: float = Field(2.0, gt=0, description="Metrics are batched for this long.")
    max_attempts: int = Field(3, ge=1)
    reconcile_seconds: float = Field(15.0, gt=0)
    queued_resend_seconds: float = Field(60.0, gt=0, description="Re-send a queued job's message after this.")

    cors_origins: list[str] = Field(default_factory=list)
    allow_hub: bool = Field(False, description="Allow Hub model ids (needs network access and a cache).")

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.models_dir is None:
            self.models_dir = self.data_dir / "models"
        self.models_dir = self.models_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'tuneforge.db'}"
        if self.broker_url is None:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        if self.env == "production":
            problems = []
            if self.database_url.startswith("sqlite"):
                problems.append("TUNEFORGE_DATABASE_URL must point at PostgreSQL, not SQLite")
            if self.broker_url.startswith("sqla+"):
                problems.append("TUNEFORGE_BROKER_URL must point at Redis, not the embedded broker")
            if "*" in self.cors_origins:
                problems.append("TUNEFORGE_CORS_ORIGINS must list origins, not '*'")
            if problems:
                raise ValueError("unsafe settings for env=production: " + "; ".join(problems))
        return self

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def is_sqlite(self) -> bool:
        assert self.database_url is not None
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.uploads_dir, self.artifacts_dir, self.models_dir):
            assert d is not None
            d.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()

"""Settings refuse unsafe values in production: the embedded defaults, open CORS, and servers
reached with an empty or well-known password."""

from __future__ import annotations

import httpx
import pytest

from tuneforge.app.core.config import Settings

GOOD_DB = "postgresql+psycopg://tuneforge:Zq9-long-random@db:5432/tuneforge"
GOOD_BROKER = "redis://:Xr7-long-random@redis:6379/0"


@pytest.mark.parametrize(
    ("database_url", "broker_url", "problem"),
    [
        ("postgresql+psycopg://tuneforge@db/tf", GOOD_BROKER, "TUNEFORGE_DATABASE_URL must include a non-default"),
        ("postgresql+psycopg://tuneforge:@db/tf", GOOD_BROKER, "TUNEFORGE_DATABASE_URL must include a non-default"),
        ("postgresql+psycopg://postgres:postgres@db/tf", GOOD_BROKER, "TUNEFORGE_DATABASE_URL"),
        ("postgresql+psycopg://u:changeme@db/tf", GOOD_BROKER, "TUNEFORGE_DATABASE_URL"),
        (GOOD_DB, "redis://redis:6379/0", "TUNEFORGE_BROKER_URL must include a non-default"),
        (GOOD_DB, "redis://:redis@redis:6379/0", "TUNEFORGE_BROKER_URL"),
        ("sqlite:///x.db", GOOD_BROKER, "must point at PostgreSQL"),
        (GOOD_DB, "sqla+sqlite:///b.db", "must point at Redis"),
    ],
)
def test_production_refuses_missing_or_default_secrets(database_url: str, broker_url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as err:
        Settings(env="production", database_url=database_url, broker_url=broker_url)
    # The refusal names the setting, never the password it saw.
    assert "changeme" not in str(err.value) and ":postgres@" not in str(err.value)


def test_production_accepts_real_secrets_and_local_mode_accepts_defaults() -> None:
    s = Settings(env="production", database_url=GOOD_DB, broker_url=GOOD_BROKER)
    assert s.env == "production"
    assert Settings(env="local", database_url="postgresql+psycopg://postgres@127.0.0.1/x").env == "local"


def test_production_refuses_open_cors() -> None:
    with pytest.raises(ValueError, match="CORS"):
        Settings(env="production", database_url=GOOD_DB, broker_url=GOOD_BROKER, cors_origins=["*"])


def test_cors_is_off_by_default_and_configurable(client: httpx.Client) -> None:
    r = client.options("/v1/files", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers

"""Docker cannot run on the CI machines, so the deployment files are checked against the code they
call: every command parses with the real CLI, every variable is a real setting, and the settings
compose passes validate under env=production."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.helpers import ROOT
from tuneforge.app.cli import build_parser
from tuneforge.app.core.config import Settings

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def tuneforge_commands() -> list[list[str]]:
    cmds = [s["command"] for s in COMPOSE["services"].values() if isinstance(s.get("command"), list)]
    cmds += [json.loads(m) for m in re.findall(r"^CMD (\[.*\])$", DOCKERFILE, re.M)]
    return [c for c in cmds if c and c[0] == "tuneforge"]


def test_every_tuneforge_command_parses() -> None:
    commands = tuneforge_commands()
    assert {c[1] for c in commands} >= {"api", "worker", "migrate"}
    for cmd in commands:
        build_parser().parse_args(cmd[1:])


def test_compose_services_and_dependencies() -> None:
    services = COMPOSE["services"]
    assert set(services) == {
        *("postgres", "redis", "migrate", "api", "worker", "inference", "minio", "minio-bucket", "vllm")
    }
    assert all(services[s].get("profiles") == ["s3"] for s in ("minio", "minio-bucket")), "MinIO is optional"
    # vLLM is optional too, reads adapters where the API writes them, and is never published.
    vllm, api = services["vllm"], services["api"]
    assert vllm["profiles"] == ["vllm"] and "ports" not in vllm
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and "--enable-lora" in vllm["command"]
    assert "vllm-adapters:/adapters:ro" in vllm["volumes"] and "vllm-adapters:/adapters" in api["volumes"]
    assert api["environment"]["TUNEFORGE_VLLM_ADAPTERS_DIR"] == "/adapters"
    assert api["environment"]["TUNEFORGE_VLLM_URL"] == "http://vllm:8000"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["api"]["build"]["target"] == "api" and services["worker"]["build"]["target"] == "worker"
    for name in ("FROM python:3.11-slim AS api", "AS worker"):
        assert name in DOCKERFILE
    assert services["inference"]["build"]["target"] == "worker"
    assert services["inference"]["command"] == ["tuneforge", "worker", "--queue", "inference"]
    for svc in ("api", "worker", "inference"):
        mounts = services[svc]["volumes"]
        assert "data:/data" in mounts and "models:/models:ro" in mounts


def test_compose_environment_is_valid_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = COMPOSE["services"]["api"]["environment"]
    fields = {f"TUNEFORGE_{name.upper()}" for name in Settings.model_fields}
    aws = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}  # boto3 reads these itself
    assert set(env) - aws <= fields, set(env) - aws - fields
    for key in list(__import__("os").environ):
        if key.startswith("TUNEFORGE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        value = re.sub(r"\$\{(POSTGRES|REDIS)_PASSWORD[^}]*\}", "s3cr3t-from-env", value)
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_0-9]+:-([^}]*)\}", r"\1", value))  # compose's defaults
    settings = Settings()
    assert settings.env == "production"
    assert settings.artifact_store == "file:///data" and not settings.store_is_remote


def test_the_s3_profile_configures_a_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the variables the compose file's header names, the settings open the MinIO bucket."""
    from tuneforge.storage import open_store

    monkeypatch.setenv("TUNEFORGE_ARTIFACT_STORE", "s3://tuneforge/artifacts")
    monkeypatch.setenv("TUNEFORGE_S3_ENDPOINT_URL", "http://minio:9000")
    settings = Settings()
    assert settings.store_is_remote
    store = open_store(settings.artifact_store, endpoint_url=settings.s3_endpoint_url)
    assert store.url == "s3://tuneforge/artifacts"
    assert "mc mb --ignore-existing m/tuneforge" in COMPOSE["services"]["minio-bucket"]["entrypoint"][2]
    monkeypatch.setenv("TUNEFORGE_ARTIFACT_STORE", "ftp://x")
    with pytest.raises(ValueError, match="TUNEFORGE_ARTIFACT_STORE"):
        Settings()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url.startswith("redis://")


def test_production_refuses_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEFORGE_DATABASE_URL")
    monkeypatch.delenv("TUNEFORGE_BROKER_URL")
    with pytest.raises(ValueError, match="must point at PostgreSQL"):
        Settings(env="production")


def test_every_package_is_copied_into_both_images() -> None:
    """`pip install .` in the image installs what pyproject lists; each listed package must be there."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.rstrip("*") for p in include]
    assert packages == ["tuneforge"]
    for package in packages:
        assert DOCKERFILE.count(f"COPY {package} ./{package}\n") == 2, package

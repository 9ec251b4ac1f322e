"""Where the CLI finds its server and key: flags, then an explicitly chosen profile, then
TUNEFORGE_API_URL / TUNEFORGE_API_KEY, then the `default` profile of the config file."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.app.client.errors import CliError, ExitCode

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    if explicit := os.environ.get("TUNEFORGE_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tuneforge" / "config.toml"


@dataclass(frozen=True)
class ClientConfig:
    api_url: str  # the server's root, without /v1
    api_key: str | None
    timeout: float = 60.0


def _profiles(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}", ExitCode.USAGE) from exc


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def resolve(*, api_url: str | None, api_key: str | None, profile: str | None, timeout: float = 60.0) -> ClientConfig:
    path = config_path()
    profiles = _profiles(path)
    chosen = profile or os.environ.get("TUNEFORGE_PROFILE")
    if chosen is not None and chosen not in profiles:
        raise CliError(f"no profile [{chosen}] in {path}", ExitCode.USAGE)
    section = profiles.get(chosen or "default", {})
    if not isinstance(section, dict):
        raise CliError(f"[{chosen or 'default'}] in {path} is not a table", ExitCode.USAGE)
    env_url, env_key = os.environ.get("TUNEFORGE_API_URL"), os.environ.get("TUNEFORGE_API_KEY")
    if chosen is not None:  # an explicit profile beats the environment
        url = api_url or section.get("api_url") or env_url or DEFAULT_URL
        key = api_key or section.get("api_key") or env_key
    else:
        url = api_url or env_url or section.get("api_url") or DEFAULT_URL
        key = api_key or env_key or section.get("api_key")
    return ClientConfig(api_url=normalize_url(str(url)), api_key=str(key) if key else None, timeout=timeout)

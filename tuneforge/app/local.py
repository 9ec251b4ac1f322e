"""The embedded default's one-time setup: a local organization and an API key kept in the data dir."""

from __future__ import annotations

import os
from pathlib import Path

from tuneforge.app.auth.service import authenticate, create_key, get_or_create_org
from tuneforge.app.core.config import Settings
from tuneforge.app.db.engine import session_scope

LOCAL_ORG = "local"


def key_file(settings: Settings) -> Path:
    return settings.data_dir / "api_key"


def ensure_local_key(settings: Settings) -> tuple[str, bool]:
    """Return (key, created). The key is written once, readable by its owner only."""
    path = key_file(settings)
    if path.is_file():
        key = path.read_text().strip()
        with session_scope() as s:
            if authenticate(s, key) is not None:
                return key, False
    with session_scope() as s:
        org = get_or_create_org(s, LOCAL_ORG)
        _, key = create_key(s, org, "local default key")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key, True

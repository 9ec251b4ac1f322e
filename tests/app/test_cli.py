"""`tuneforge keys`: create (shown once), list (never the value), revoke (takes effect at once)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

from tests.helpers import ROOT
from tuneforge.app.core.config import get_settings


def tuneforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "tuneforge.app.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_keys_create_list_revoke(client: httpx.Client) -> None:
    made = tuneforge("keys", "create", "--org", "cli-team", "--name", "ci", "--admin", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    key = created["key"]
    assert key.startswith("tf-") and created["admin"] is True and created["organization"] == "cli-team"
    assert "only its hash is kept" in made.stderr
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/fine_tuning/jobs", headers=auth, params={"all_organizations": True}).status_code == 200

    listed = tuneforge("keys", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = next(r for r in rows if r["id"] == created["id"])
    assert mine["revoked_at"] is None and mine["name"] == "ci"
    assert key not in listed.stdout and key not in tuneforge("keys", "list").stdout  # values are never shown

    revoked = tuneforge("keys", "revoke", created["id"])
    assert revoked.returncode == 0 and created["id"] in revoked.stdout
    # At once in the process that revoked it; an API process that authenticated the key recently
    # notices within TUNEFORGE_AUTH_CACHE_SECONDS (tuneforge/app/auth/cache.py).
    deadline = time.monotonic() + get_settings().auth_cache_seconds + 2
    while client.get("/v1/files", headers=auth).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still authenticates after the cache TTL"
        time.sleep(0.2)
    again = tuneforge("keys", "revoke", created["id"])
    assert again.returncode == 1 and "no active key" in again.stderr
    table = tuneforge("keys", "list").stdout
    assert any(created["id"] in line and "revoked" in line for line in table.splitlines())


def test_keys_create_needs_an_org() -> None:
    r = tuneforge("keys", "create")
    assert r.returncode == 2 and "--org" in r.stderr

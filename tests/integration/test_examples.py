"""The examples the docs point to, run for real against the live API and worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, shakespeare_rows


@pytest.fixture
def env(live_api: str, api_key: str) -> dict[str, str]:
    return {**os.environ, "TUNEFORGE_URL": f"{live_api}/v1", "TUNEFORGE_API_KEY": api_key}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in shakespeare_rows(24)) + "\n")
    return p


def test_openai_quickstart(env: dict[str, str], dataset: Path, live_worker, tiny_model: str) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [sys.executable, "examples/openai_quickstart.py", str(dataset), tiny_model],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status: succeeded" in out.stdout
    assert "checkpoint: step 10" in out.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_quickstart(env: dict[str, str], dataset: Path, live_worker, tiny_model: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        ["bash", str(ROOT / "examples/curl_quickstart.sh"), str(dataset), tiny_model],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status: succeeded" in out.stdout
    assert "adapter_model.safetensors" in out.stdout


def test_sweep_quickstart(env: dict[str, str], dataset: Path, live_worker, tiny_model: str) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [sys.executable, "examples/sweep_quickstart.py", str(dataset), tiny_model],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status: succeeded" in out.stdout
    assert "jobs in the sweep: 3" in out.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_sweep_curl(env: dict[str, str], dataset: Path, live_worker, tiny_model: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        ["bash", str(ROOT / "examples/sweep_curl.sh"), str(dataset), tiny_model],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status: succeeded" in out.stdout
    assert "adapter_model.safetensors" in out.stdout

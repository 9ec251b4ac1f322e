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


CURL = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param(
            [sys.executable, "examples/openai_quickstart.py"], ["checkpoint: step 10"], id="openai_quickstart"
        ),
        pytest.param(
            ["bash", "examples/curl_quickstart.sh"], ["adapter_model.safetensors"], id="curl_quickstart", marks=CURL
        ),
        pytest.param([sys.executable, "examples/sweep_quickstart.py"], ["jobs in the sweep: 3"], id="sweep_quickstart"),
        pytest.param(["bash", "examples/sweep_curl.sh"], ["adapter_model.safetensors"], id="sweep_curl", marks=CURL),
    ],
)
def test_example_runs_to_a_succeeded_job(
    command: list[str],
    expected: list[str],
    env: dict[str, str],
    dataset: Path,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
    tmp_path: Path,
) -> None:
    """Each example, given the dataset and the model, in a scratch directory (the shell ones write
    the adapter they download there). The timeout only guards against a hang: the examples poll the
    job themselves."""
    script = ROOT / command[-1]
    out = subprocess.run(
        [*command[:-1], str(script), str(dataset), tiny_model],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    for text in ["status: succeeded", *expected]:
        assert text in out.stdout, out.stdout

"""The client CLI as a user runs it: `tuneforge files|jobs|chat` subprocesses against real
`tuneforge api` + `tuneforge worker` processes, training the tiny Llama."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT, shakespeare_rows, worker_log

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(live_api: str, api_key: str, tmp_path: Path) -> Cli:
    base = {
        **os.environ,
        "TUNEFORGE_API_URL": live_api,
        "TUNEFORGE_API_KEY": api_key,
        "TUNEFORGE_CONFIG": str(tmp_path / "absent.toml"),
        "COLUMNS": "160",
    }

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-P", "-m", "tuneforge.app.cli", *args],
            cwd=ROOT,
            env={k: v for k, v in {**base, **(env or {})}.items() if v is not None and v != "<unset>"},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    p = tmp_path / "shakespeare.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in shakespeare_rows(48)) + "\n")
    return p


def upload(cli: Cli, path: Path) -> str:
    r = cli("files", "upload", str(path), "--json")
    assert r.returncode == 0, r.stderr
    return str(json.loads(r.stdout)["id"])


def test_files_upload_shows_the_report_and_list(cli: Cli, dataset: Path, tmp_path: Path) -> None:
    r = cli("files", "upload", str(dataset))
    assert r.returncode == 0, r.stderr
    file_id = r.stdout.strip().splitlines()[-1]
    assert file_id.startswith("file-")
    assert "format=jsonl" in r.stderr and "rows=48" in r.stderr and "text" in r.stderr  # the columns table

    listed = cli("files", "list", "--json")
    assert listed.returncode == 0 and file_id in [f["id"] for f in json.loads(listed.stdout)["data"]]
    assert file_id in cli("files", "list").stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    refused = cli("files", "upload", str(bad))
    assert refused.returncode == 1 and "line 2" in refused.stderr, refused.stderr


def test_error_exit_codes(cli: Cli, live_api: str, tmp_path: Path) -> None:
    bad_key = cli("jobs", "list", "--api-key", "tf-not-a-key")
    assert bad_key.returncode == 3, bad_key.stderr
    assert "error" in bad_key.stderr.lower()

    unknown = cli("jobs", "get", "ftjob-doesnotexist", "--json")
    assert unknown.returncode == 4
    assert "ftjob-doesnotexist" in json.loads(unknown.stderr)["error"]["message"]
    assert cli("jobs", "pause", "ftjob-doesnotexist").returncode == 4

    invalid = cli("jobs", "create", "--model", "tiny-llama", "--file", "file-x", "--set", "training.learning_rate=-1")
    assert invalid.returncode == 2 and "training.learning_rate" in invalid.stderr  # refused before sending
    unknown_field = cli("jobs", "create", "--model", "m", "--file", "f", "--set", "lora.rank=8", "--json")
    assert unknown_field.returncode == 2 and json.loads(unknown_field.stderr)["error"]["param"] == "lora.rank"

    down = cli("jobs", "list", "--api-url", "http://127.0.0.1:9")
    assert down.returncode == 5 and "cannot reach" in down.stderr


def test_profile_from_config_file_and_flags_override(cli: Cli, live_api: str, api_key: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[default]\napi_url = "{live_api}/v1"\napi_key = "{api_key}"\n\n[broken]\napi_key = "tf-nope"\n')
    env = {"TUNEFORGE_CONFIG": str(config), "TUNEFORGE_API_URL": "<unset>", "TUNEFORGE_API_KEY": "<unset>"}
    assert cli("jobs", "list", "--json", env=env).returncode == 0
    assert cli("jobs", "list", "--profile", "broken", "--api-url", live_api, env=env).returncode == 3
    assert cli("jobs", "list", "--api-key", "tf-nope", env=env).returncode == 3  # the flag beats the profile
    missing = cli("jobs", "list", "--profile", "nosuch", env=env)
    assert missing.returncode == 2 and "nosuch" in missing.stderr


def test_create_watch_logs_download(
    cli: Cli,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
    dataset: Path,
    tmp_path: Path,
) -> None:
    file_id = upload(cli, dataset)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "lora:\n  r: 8\n  alpha: 16\ntraining:\n  max_steps: 4\n  batch_size: 8\n  save_every: 3\n"
        "  learning_rate: 0.01\n"
    )
    made = cli(
        "jobs", "create", "--model", tiny_model, "--file", file_id, "--spec", str(spec),
        "--set", "training.max_steps=6", "--metadata", "suite=cli", "--seed", "5", "--watch",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr + worker_log()
    job_id = re.search(r"created (ftjob-\w+)", made.stderr).group(1)  # type: ignore[union-attr]
    assert "succeeded" in made.stdout and "loss:" in made.stdout and "tokens:" in made.stdout

    got = json.loads(cli("jobs", "get", job_id, "--json").stdout)
    assert got["status"] == "succeeded" and got["spec"]["training"]["max_steps"] == 6  # --set beat the file
    assert got["spec"]["lora"]["r"] == 8 and got["metadata"] == {"suite": "cli"}
    listed = json.loads(cli("jobs", "list", "--json", "--status", "succeeded").stdout)
    assert job_id in [j["id"] for j in listed["data"]]
    assert job_id in cli("jobs", "list").stdout

    logs = cli("jobs", "logs", job_id)
    assert logs.returncode == 0 and logs.stdout.strip().splitlines()[-1].endswith("The job has successfully completed")
    followed = cli("jobs", "logs", job_id, "-f", timeout=60)
    # A finished job cannot be paused: refused (1) whether the server predates pause or refuses it with 409.
    paused = cli("jobs", "pause", job_id)
    assert paused.returncode == 1 and "pause" in paused.stderr.lower(), paused.stderr
    assert followed.returncode == 0 and "The job has successfully completed" in followed.stdout

    out = tmp_path / "out"
    dl = cli("jobs", "download", job_id, "-o", str(out), "--json")
    assert dl.returncode == 0, dl.stderr
    paths = json.loads(dl.stdout)["paths"]
    assert paths and all((Path(p) / "adapter_config.json").exists() for p in paths)
    ckpt = cli("jobs", "download", job_id, "--checkpoint", "3", "-o", str(tmp_path / "ckpt"))
    assert ckpt.returncode == 0, ckpt.stderr
    assert any((Path(p) / "adapter_model.safetensors").exists() for p in ckpt.stdout.split())


def test_cancel_then_watch_exits_non_zero(
    cli: Cli,
    live_worker: subprocess.Popen[bytes],
    tiny_model: str,
    dataset: Path,
) -> None:
    file_id = upload(cli, dataset)
    made = cli("jobs", "create", "--model", tiny_model, "--file", file_id, "--set", "training.max_steps=5000", "--json")
    assert made.returncode == 0, made.stderr
    job_id = json.loads(made.stdout)["id"]
    cancelled = cli("jobs", "cancel", job_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["detailed_status"] in ("cancel_requested", "cancelled")
    watched = cli("jobs", "watch", job_id, "--json", timeout=120)
    assert watched.returncode == 7, watched.stderr + worker_log()
    assert json.loads(watched.stdout)["status"] == "cancelled"

"""The hostile cases of docs/security.md, each through the real API on PostgreSQL: every one gets a
clear 4xx (or a failed job with a reason) and none creates or strands anything."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings


def job_count(client: httpx.Client) -> int:
    return len(client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"])


@pytest.fixture
def training_file(client: httpx.Client) -> str:
    return upload_jsonl(client, shakespeare_rows(8))["id"]


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"trust_remote_code": True}, "trust_remote_code"),
        ({"lora": {"r": 8, "trust_remote_code": True}}, "lora.trust_remote_code"),
        ({"quantization": {"trust_remote_code": True}}, "quantization.trust_remote_code"),
        ({"training": {"max_steps": 1, "trust_remote_code": True}}, "training.trust_remote_code"),
        ({"data": {"trust_remote_code": True}}, "data.trust_remote_code"),
        ({"model_kwargs": {"trust_remote_code": True}}, "model_kwargs"),
        (
            {"method": {"type": "supervised", "supervised": {"trust_remote_code": True}}},
            "method.supervised.trust_remote_code",
        ),
    ],
)
def test_trust_remote_code_smuggled_anywhere_is_refused(
    client: httpx.Client,
    tiny_model: str,
    training_file: str,
    over: dict[str, Any],
    param: str,
) -> None:
    before = job_count(client)
    r = client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": training_file, **over})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["message"].count("unknown field") >= 1
    assert job_count(client) == before


def test_a_10_mb_single_line_is_refused_naming_it(client: httpx.Client) -> None:
    line = json.dumps({"text": "a" * (10 << 20)}).encode()
    r = client.post("/v1/files", files={"file": ("big.jsonl", line)}, data={"purpose": "fine-tune"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_file" and "line 1: longer than the limit" in err["message"]


@pytest.mark.parametrize(
    "payload",
    [
        b"\x89PNG\r\n\x1a\n" + os.urandom(4096),  # an image
        b"\x7fELF\x02\x01\x01\x00" + os.urandom(4096),  # an executable
        b"\x1f\x8b\x08\x00" + os.urandom(4096),  # gzip
        b"\x80\x04\x95" + b"cos\nsystem\n(S'id'\ntR." + b"\x00" * 16,  # a pickle
        b'{"text": "ok"}\n' + b"\xff\xfe\x00binary\x00tail\n",  # valid first line, binary after
    ],
)
def test_binary_named_jsonl_is_refused_by_content(client: httpx.Client, payload: bytes) -> None:
    r = client.post(
        "/v1/files", files={"file": ("data.jsonl", payload, "application/jsonl")}, data={"purpose": "fine-tune"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_file"
    assert "not a text" in r.json()["error"]["message"] or "invalid JSON" in r.json()["error"]["message"]


def test_content_decides_the_format_not_the_name(client: httpx.Client) -> None:
    r = client.post(
        "/v1/files", files={"file": ("data.csv", b'{"text": "a"}\n{"text": "b"}\n')}, data={"purpose": "fine-tune"}
    )
    assert r.status_code == 200 and r.json()["format"] == "jsonl"


def test_a_hostile_filename_never_becomes_a_path_or_a_header(client: httpx.Client, settings: Settings) -> None:
    name = '../../../../tmp/evil"\r\nX-Injected: 1;.jsonl'
    r = client.post("/v1/files", files={"file": (name, b'{"text": "hi"}\n')}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    f = r.json()
    assert "/" not in f["filename"] and ".." not in f["filename"].split("/")
    assert (settings.uploads_dir / f["id"]).is_file()  # stored under its id
    assert not Path("/tmp/evil").exists()
    content = client.get(f"/v1/files/{f['id']}/content")
    assert content.status_code == 200
    assert "x-injected" not in content.headers
    assert "\r" not in content.headers["content-disposition"] and "\n" not in content.headers["content-disposition"]


def test_the_archive_holds_only_the_adapters_own_files(tmp_path: Path) -> None:
    """A manifest that names paths outside the adapter (or a symlink planted in it) adds nothing
    outside; members are relative, under one folder named by the server. A symlink out of the store
    is refused as missing (409), never followed."""
    from tuneforge.app.core.errors import Conflict
    from tuneforge.app.jobs.artifacts import plan_archive, stream_archive
    from tuneforge.storage import LocalStore

    secret = tmp_path / "secret.txt"
    secret.write_text("do not ship")
    adapter = tmp_path / "artifacts" / "ftjob-x" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "link").symlink_to(secret)
    manifest = {
        "adapter_config.json": "h",
        "../../../secret.txt": "h",
        str(secret): "h",
        "/etc/passwd": "h",
    }
    store = LocalStore(tmp_path / "artifacts")
    plan = plan_archive(store, "ftjob-x/adapter", manifest, "ftjob-x-adapter")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"".join(stream_archive(store, plan)))
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == ["ftjob-x-adapter/adapter_config.json", "ftjob-x-adapter/SHA256SUMS.json"]
        assert all(m.isfile() for m in members)
        assert b"do not ship" not in b"".join(tar.extractfile(m).read() for m in members)  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        plan_archive(store, "ftjob-x/adapter", {**manifest, "link": "h"}, "ftjob-x-adapter")


def test_the_archive_path_comes_from_the_record_not_the_request(
    client: httpx.Client, tiny_model: str, training_file: str
) -> None:
    job = client.post(
        "/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": training_file, "training": {"max_steps": 1}}
    ).json()
    for value in ("../../etc", "/etc/passwd", "1;rm -rf /", "-1", "9" * 40):
        r = client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter", params={"checkpoint": value})
        assert r.status_code == 400, (value, r.text)
        assert r.json()["error"]["param"] == "checkpoint"
    for path in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e"):
        assert client.get(f"/v1/fine_tuning/jobs/{path}/adapter").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/v1/fine_tuning/jobs/ftjob-x%00/adapter",
        "/v1/files/file-%00",
        "/v1/fine_tuning/jobs?after=a%00",
        "/v1/files?purpose=%00",
    ],
)
def test_nul_characters_in_urls_are_400_not_a_database_error(client: httpx.Client, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_url"
    assert r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"training_file": "file-\x00"}, "training_file"),
        ({"metadata": {"team": "a\x00b"}}, "metadata.team"),
        ({"metadata": {"t\x00": "x"}}, "metadata.t\x00"),
        ({"model": "tiny\x00llama"}, "model"),
    ],
)
def test_nul_characters_in_a_job_body_name_the_field(
    client: httpx.Client,
    tiny_model: str,
    training_file: str,
    over: dict[str, Any],
    param: str,
) -> None:
    r = client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": training_file, **over})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


# ----------------------------------------------------------------------------- models


def test_hub_ids_are_refused_unless_allowed(
    client: httpx.Client,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    training_file: str,
) -> None:
    from tuneforge.worker.runner import execute

    body = {"model": "meta-llama/Llama-3.2-1B", "training_file": training_file, "training": {"max_steps": 1}}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model" and "TUNEFORGE_ALLOW_HUB" in r.json()["error"]["message"]

    # Allowed: accepted, then the worker downloads (here it cannot: HF_HUB_OFFLINE=1) and the job
    # fails with the reason instead of hanging.
    monkeypatch.setattr(settings, "allow_hub", True)
    job = client.post("/v1/fine_tuning/jobs", json=body).json()
    assert job["status"] == "queued"
    assert execute(job["id"], "hub-test-worker") == "failed"
    failed = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["param"] == "model" and "could not be downloaded" in failed["error"]["message"]
    assert not list((settings.data_dir / "hub").rglob("*.bin"))


def test_pickle_weights_need_the_operator_opt_in(
    client: httpx.Client,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: str,
    training_file: str,
) -> None:
    import torch
    from safetensors.torch import load_file

    from tuneforge.worker.runner import execute

    src = settings.models_dir / tiny_model
    pickled = settings.models_dir / "tiny-llama-pickled"
    if not pickled.exists():
        shutil.copytree(src, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
        torch.save(load_file(src / "model.safetensors"), pickled / "pytorch_model.bin")
    body = {"model": "tiny-llama-pickled", "training_file": training_file, "training": {"max_steps": 1}}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400 and "TUNEFORGE_ALLOW_PICKLE_WEIGHTS" in r.json()["error"]["message"]

    monkeypatch.setattr(settings, "allow_pickle_weights", True)
    job = client.post("/v1/fine_tuning/jobs", json=body).json()
    assert execute(job["id"], "pickle-test-worker") == "succeeded"


def test_a_model_dir_with_both_never_loads_the_pickle(tmp_path: Path, settings: Settings, tiny_model: str) -> None:
    """With safetensors present, a planted .bin next to them is never opened."""
    from tuneforge.contract.spec import JobSpec
    from tuneforge.worker.training.model import load_model

    both = tmp_path / "both"
    shutil.copytree(settings.models_dir / tiny_model, both)
    (both / "pytorch_model.bin").write_bytes(b"\x80\x04not a real pickle")  # would fail to unpickle
    spec = JobSpec.model_validate({"seed": 0, "quantization": {"bits": 4}})
    import torch

    model, _ = load_model(both, spec, torch.device("cpu"))
    assert sum(p.numel() for p in model.parameters()) > 0

"""`?format=gguf|gguf-lora` on the adapter route: what is refused before anything is loaded or converted,
each a 4xx (or a 503 for a server without llama.cpp) naming the parameter. The exports themselves are
checked by llama.cpp in tests/integration/test_gguf_export.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings


def _job(client: httpx.Client, model: str, **body: Any) -> str:
    rows = body.pop("rows", None) or [{"text": t["text"]} for t in shakespeare_rows(16)]
    file = upload_jsonl(client, rows, name="gguf.jsonl")
    r = client.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": file["id"], **body})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _error(client: httpx.Client, job_id: str, **params: str) -> tuple[int, dict[str, Any]]:
    r = client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter", params=params)
    return r.status_code, r.json()["error"]


@pytest.fixture
def tools(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A llama.cpp cache with the converters and no built quantizer."""
    (tmp_path / "llama.cpp").mkdir()
    (tmp_path / "llama.cpp" / "convert_hf_to_gguf.py").write_text("")
    monkeypatch.setattr(settings, "llama_cpp_dir", tmp_path)
    return tmp_path


def test_refusals_name_the_parameter(client: httpx.Client, tiny_model: str, tools: Path) -> None:
    job = _job(client, tiny_model)
    status, err = _error(client, job, format="peft", quant="q8_0")
    assert status == 400 and err["param"] == "quant" and "format=gguf" in err["message"]
    status, err = _error(client, job, format="gguf-lora", quant="q8_0")
    assert status == 400 and err["param"] == "quant" and err["code"] == "invalid_quant"
    status, err = _error(client, job, format="gguf", quant="q5_k")
    assert status == 400 and err["param"] == "quant"
    # q4_k_m needs llama-quantize, which this cache has not built; f16 and q8_0 need only the converters.
    status, err = _error(client, job, format="gguf", quant="q4_k_m")
    assert status == 400 and err["code"] == "quant_not_available" and "scripts/llama_cpp.sh" in err["message"]
    # Past every refusal, a queued job has no adapter yet: the same 409 as format=peft.
    status, err = _error(client, job, format="gguf", quant="q8_0")
    assert status == 409 and err["code"] == "adapter_not_available"
    client.post(f"/v1/fine_tuning/jobs/{job}/cancel")


def test_adapters_llama_cpp_cannot_carry(client: httpx.Client, tiny_model: str, tools: Path) -> None:
    rows = [{"text": f"message {i}", "label": "spam" if i % 2 else "ham"} for i in range(20)]
    cls = _job(client, tiny_model, rows=rows, task="sequence_classification")
    for fmt in ("gguf", "gguf-lora"):
        status, err = _error(client, cls, format=fmt)
        assert status == 400 and err["code"] == "gguf_not_supported" and "causal_lm" in err["message"]
    dora = _job(client, tiny_model, lora={"use_dora": True})
    status, err = _error(client, dora, format="gguf-lora")
    assert status == 400 and err["param"] == "format" and "DoRA" in err["message"] and "format=gguf" in err["message"]
    for job in (cls, dora):
        client.post(f"/v1/fine_tuning/jobs/{job}/cancel")


def test_a_server_without_llama_cpp_says_how_to_get_it(
    client: httpx.Client, tiny_model: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "llama_cpp_dir", tmp_path / "absent")
    job = _job(client, tiny_model)
    status, err = _error(client, job, format="gguf-lora")
    assert status == 503 and err["code"] == "gguf_unavailable" and "scripts/llama_cpp.sh" in err["message"]
    client.post(f"/v1/fine_tuning/jobs/{job}/cancel")

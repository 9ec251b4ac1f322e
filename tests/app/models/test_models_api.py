"""GET /v1/models and /v1/models/{id}: base models under the models root, by the HTTP API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

MODELS = Path(os.environ["TUNEFORGE_MODELS_DIR"])


def test_base_models_are_listed_with_their_facts(client: httpx.Client, tiny_model: str) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    tiny = next(m for m in body["data"] if m["id"] == tiny_model)
    assert tiny["object"] == "model" and tiny["owned_by"] == "system" and tiny["kind"] == "base"
    assert tiny["architecture"] == "LlamaForCausalLM" and tiny["context_length"] == 512
    assert tiny["chat_template"] is True and tiny["parameters"] > 100_000
    assert isinstance(tiny["created"], int)
    assert client.get(f"/v1/models/{tiny_model}").json() == tiny


def test_folders_that_are_not_loadable_models_are_not_listed(client: httpx.Client, tiny_model: str) -> None:
    (MODELS / ".import-half-written").mkdir(parents=True, exist_ok=True)
    (MODELS / ".import-half-written" / "config.json").write_text("{}")
    custom = MODELS / "needs-code"
    custom.mkdir(exist_ok=True)
    (custom / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "m.M"}}))
    (custom / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert tiny_model in ids and "needs-code" not in ids and not any(i.startswith(".") for i in ids)
    r = client.get("/v1/models/needs-code")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_unknown_and_hostile_ids_are_404s_in_the_error_envelope(client: httpx.Client) -> None:
    for model_id in (
        "no-such-model",
        "..%2F..%2Fetc",
        "ft:tiny-llama:org-x::ftjob-doesnotexist",
        "ft:tiny-llama:org-x::ftjob-doesnotexist:ckpt-step-4",
        "ft:garbage",
        "a" * 300,
        "x/" + "b" * 5000,
    ):
        r = client.get(f"/v1/models/{model_id}")
        assert r.status_code == 404, (model_id, r.text)
        err = r.json()["error"]
        assert err["code"] == "model_not_found" and err["param"] == "model"


def test_models_need_a_key(client: httpx.Client) -> None:
    assert client.get("/v1/models", headers={"Authorization": ""}).status_code == 401


def test_a_fine_tuned_model_answers_with_its_base_facts(client: httpx.Client, tiny_model: str) -> None:
    """Chat with an `ft:` model renders through its base's template, so the model object says so."""
    from sqlalchemy import update

    from tests.helpers import shakespeare_rows, upload_jsonl
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Job
    from tuneforge.app.db.types import utcnow

    file = upload_jsonl(client, shakespeare_rows(8))
    job = client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file["id"]}).json()
    ft = f"ft:{tiny_model}:{job['organization_id']}::{job['id']}"
    with session_scope() as s:  # as the worker records a success
        s.execute(
            update(Job)
            .where(Job.id == job["id"])
            .values(status="succeeded", adapter_path="unused", fine_tuned_model=ft, finished_at=utcnow())
        )
    listed = next(m for m in client.get("/v1/models").json()["data"] if m["id"] == ft)
    assert listed["kind"] == "fine_tuned" and listed["base_model"] == tiny_model
    base_facts = (listed["architecture"], listed["context_length"], listed["chat_template"])
    assert base_facts == ("LlamaForCausalLM", 512, True)
    assert client.get(f"/v1/models/{ft}").json() == listed

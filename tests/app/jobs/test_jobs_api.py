from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.helpers import REDIS_URL, insert_job, make_key, org_id_of, shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings


@pytest.fixture
def training_file(client: httpx.Client) -> str:
    return upload_jsonl(client, shakespeare_rows(20))["id"]


def job_body(model: str, file_id: str, **over: object) -> dict[str, Any]:
    return {"model": model, "training_file": file_id, "training": {"max_steps": 2}, **over}


def test_create_stores_then_queues(client: httpx.Client, tiny_model: str, training_file: str) -> None:
    queue_len_before = redis.Redis.from_url(REDIS_URL).llen("gpu")
    r = client.post(
        "/v1/fine_tuning/jobs",
        json=job_body(tiny_model, training_file, metadata={"team": "nlp"}, suffix="x1"),
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["object"] == "fine_tuning.job"
    assert job["status"] == "queued"
    assert job["training_file"] == training_file
    assert job["spec"]["quantization"] == {
        "bits": 4,
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": "auto",
    }
    assert job["hyperparameters"]["batch_size"] == 4
    assert job["organization_id"].startswith("org-")
    assert job["progress"]["step"] == 0
    # Only the job id travels: the message is on the Redis queue the workers consume.
    assert redis.Redis.from_url(REDIS_URL).llen("gpu") == queue_len_before + 1
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]
    assert any("job queued" in e["message"] for e in events)
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["id"] == job["id"]


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"surprise": True}, "surprise"),
        ({"training": {"learning_rate": -0.1}}, "training.learning_rate"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"training_file": "file-doesnotexist"}, "training_file"),
        ({"validation_file": "file-doesnotexist"}, "validation_file"),
        ({"model": "no-such-model"}, "model"),
        ({"model": "../../etc"}, "model"),
        ({"model": "/etc"}, "model"),
        ({"quantization": {"bits": 8, "quant_type": "fp4"}}, "quantization.quant_type"),
        ({"task": "regression"}, "training_file"),
    ],
)
def test_bad_input_is_4xx_naming_the_field(
    client: httpx.Client,
    tiny_model: str,
    training_file: str,
    over: dict[str, Any],
    param: str,
) -> None:
    before = client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"]
    r = client.post("/v1/fine_tuning/jobs", json={**job_body(tiny_model, training_file), **over})
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["message"]
    after = client.get("/v1/fine_tuning/jobs", params={"limit": 1000}).json()["data"]
    assert len(after) == len(before)  # nothing was created, so nothing can be stuck


def test_symlink_out_of_models_root_is_refused(
    client: httpx.Client, settings: Settings, training_file: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (outside / "model.safetensors").write_bytes(b"")
    link = settings.models_dir / "sneaky"
    link.symlink_to(outside)
    try:
        r = client.post("/v1/fine_tuning/jobs", json=job_body("sneaky", training_file))
    finally:
        link.unlink()
    assert r.status_code == 400
    assert "outside the models root" in r.json()["error"]["message"]


def test_pickle_only_and_remote_code_models_are_refused(
    client: httpx.Client, settings: Settings, training_file: str
) -> None:
    pickled = settings.models_dir / "pickled"
    pickled.mkdir(exist_ok=True)
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    r = client.post("/v1/fine_tuning/jobs", json=job_body("pickled", training_file))
    assert r.status_code == 400
    assert "pickle" in r.json()["error"]["message"]
    remote = settings.models_dir / "remote"
    remote.mkdir(exist_ok=True)
    (remote / "config.json").write_text('{"auto_map": {"AutoModel": "x.Model"}}')
    (remote / "model.safetensors").write_bytes(b"")
    r = client.post("/v1/fine_tuning/jobs", json=job_body("remote", training_file))
    assert r.status_code == 400
    assert "trust_remote_code" in r.json()["error"]["message"]


def test_list_paging_and_filters(client: httpx.Client, tiny_model: str, training_file: str) -> None:
    ids = [
        client.post(
            "/v1/fine_tuning/jobs",
            json=job_body(tiny_model, training_file, metadata={"batch": "paging", "i": str(i)}),
        ).json()["id"]
        for i in range(3)
    ]
    page1 = client.get("/v1/fine_tuning/jobs", params={"limit": 2, "metadata[batch]": "paging"}).json()
    assert [j["id"] for j in page1["data"]] == ids[::-1][:2]
    assert page1["has_more"] is True
    page2 = client.get(
        "/v1/fine_tuning/jobs",
        params={"limit": 2, "metadata[batch]": "paging", "after": page1["data"][-1]["id"]},
    ).json()
    assert [j["id"] for j in page2["data"]] == [ids[0]]
    assert page2["has_more"] is False
    only = client.get("/v1/fine_tuning/jobs", params={"metadata[i]": "1"}).json()["data"]
    assert [j["id"] for j in only] == [ids[1]]
    queued = client.get("/v1/fine_tuning/jobs", params={"status": "queued", "limit": 1000}).json()["data"]
    assert set(ids) <= {j["id"] for j in queued}


def test_a_stored_spec_this_version_cannot_read_does_not_break_the_list(client: httpx.Client) -> None:
    """A job whose stored spec fails validation (another version's field, a hand edit) is listed and read
    with the defaults in OpenAI's fields and its spec as stored; it made every page it was on a 500."""
    stored = {"seed": 7, "lora": {"rank_of_a_later_version": 8}}
    job_id = insert_job(org_id_of("acme"), "succeeded", spec=stored, seed=7)
    listed = client.get("/v1/fine_tuning/jobs", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    assert job_id in {j["id"] for j in listed.json()["data"]}
    one = client.get(f"/v1/fine_tuning/jobs/{job_id}")
    assert one.status_code == 200 and one.json()["spec"] == stored
    assert one.json()["method"]["type"] == "supervised" and one.json()["seed"] == 7


def test_cancel_queued_then_conflict(client: httpx.Client, tiny_model: str, training_file: str) -> None:
    job = client.post("/v1/fine_tuning/jobs", json=job_body(tiny_model, training_file)).json()
    r = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    again = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.headers["x-should-retry"] == "false"
    # Its training file is no longer in use by a live job, so it may be deleted.
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}/adapter").status_code == 409


def test_file_in_use_cannot_be_deleted(client: httpx.Client, tiny_model: str, training_file: str) -> None:
    job = client.post("/v1/fine_tuning/jobs", json=job_body(tiny_model, training_file)).json()
    r = client.delete(f"/v1/files/{training_file}")
    assert r.status_code == 409
    assert job["id"] in r.json()["error"]["message"]


def test_idempotent_create(client: httpx.Client, tiny_model: str, training_file: str) -> None:
    h = {"Idempotency-Key": f"create-{training_file}"}
    a = client.post("/v1/fine_tuning/jobs", json=job_body(tiny_model, training_file), headers=h).json()
    b = client.post("/v1/fine_tuning/jobs", json=job_body(tiny_model, training_file), headers=h).json()
    assert a["id"] == b["id"]
    c = client.post("/v1/fine_tuning/jobs", json=job_body(tiny_model, training_file, suffix="other"), headers=h)
    assert c.status_code == 409
    assert c.headers["x-should-retry"] == "false"


def test_other_tenant_sees_404_everywhere(
    client: httpx.Client, other_key: str, tiny_model: str, training_file: str
) -> None:
    job = client.post("/v1/fine_tuning/jobs", json=job_body(tiny_model, training_file)).json()
    other = {"Authorization": f"Bearer {other_key}"}
    for path in ("", "/events", "/checkpoints", "/metrics", "/adapter"):
        r = client.get(f"/v1/fine_tuning/jobs/{job['id']}{path}", headers=other)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "job_not_found"
    assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=other).status_code == 404
    # ...and another tenant's file cannot be trained on.
    r = client.post("/v1/fine_tuning/jobs", json=job_body(tiny_model, training_file), headers=other)
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"


def test_unknown_routes_and_methods_use_the_envelope(client: httpx.Client) -> None:
    r = client.get("/v1/nope")
    assert r.status_code == 404
    assert "error" in r.json()
    r = client.put("/v1/fine_tuning/jobs")
    assert r.status_code == 405
    assert "error" in r.json()


def test_health(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert client.get("/metrics").status_code == 403  # every org's counts: admin keys only
    admin = {"Authorization": f"Bearer {make_key('ops', admin=True)}"}
    assert "tuneforge_jobs" in client.get("/metrics", headers=admin).text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/fine_tuning/jobs", {'metadata[a"b]': "x"}),
        ("/v1/fine_tuning/jobs", {"limit": 10**30}),
        ("/v1/fine_tuning/jobs/{job}/metrics", {"since_step": 10**30}),
        ("/v1/fine_tuning/jobs/{job}/adapter", {"checkpoint": 10**30}),
        ("/v1/fine_tuning/jobs/{job}/events", {"limit": -1}),
    ],
)
def test_hostile_query_parameters_are_400(
    client: httpx.Client,
    tiny_model: str,
    training_file: str,
    path: str,
    params: dict[str, Any],
) -> None:
    job = client.post("/v1/fine_tuning/jobs", json=job_body(tiny_model, training_file)).json()
    r = client.get(path.format(job=job["id"]), params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"]


def test_unknown_after_cursor_is_an_empty_page(client: httpx.Client) -> None:
    page = client.get("/v1/fine_tuning/jobs", params={"after": "ftjob-nope"}).json()
    assert page["data"] == [] and page["has_more"] is False

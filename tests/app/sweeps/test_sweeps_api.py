"""The sweeps API without a worker: validation at POST, the first trials as queued jobs, reads, cancel."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import make_key, shakespeare_rows, upload_jsonl


@pytest.fixture
def training_file(client: httpx.Client) -> str:
    return upload_jsonl(client, shakespeare_rows(20))["id"]


def sweep_body(model: str, file_id: str, **over: Any) -> dict[str, Any]:
    return {
        "model": model,
        "training_file": file_id,
        "training": {"max_steps": 2},
        "search_space": {"training.learning_rate": {"values": [1e-3, 1e-2]}},
        "strategy": "grid",
        **over,
    }


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"search_space": {"lora.nope": {"values": [1]}}}, "search_space.lora.nope"),
        ({"search_space": {"model": {"values": ["x"]}}}, "search_space.model"),
        ({"search_space": {"lora.r.deeper": {"values": [1]}}}, "search_space.lora.r.deeper"),
        ({"search_space": {"lora.r": {"values": []}}}, "search_space.lora.r"),
        ({"search_space": {"lora.r": {"values": [4, 0]}}}, "search_space.lora.r"),
        ({"search_space": {"lora.r": {"int": [8, 4]}}}, "search_space.lora.r"),
        ({"search_space": {"lora.r": {"int": [0, 8], "step": 4}}, "strategy": "random"}, "search_space.lora.r"),
        (
            {"search_space": {"lora.dropout": {"uniform": [0.3, 0.1]}}, "strategy": "random"},
            "search_space.lora.dropout",
        ),
        (
            {"search_space": {"training.learning_rate": {"log_uniform": [0, 0.1]}}, "strategy": "tpe"},
            "search_space.training.learning_rate",
        ),
        (
            {"search_space": {"training.learning_rate": {"uniform": [1e-4, 1e-2]}}},  # a grid needs finite values
            "search_space.training.learning_rate",
        ),
        ({"search_space": {}}, "search_space"),
        ({"search_space": {"lora.r": {"int": [1, 500]}}}, "search_space"),  # 500 combinations > the cap of 100
        ({"search_space": {"training.max_steps": {"int": [1, 10**15]}}}, "search_space"),
        ({"strategy": "random", "max_trials": 101}, "max_trials"),
        ({"objective": {"metric": "accuracy"}}, "objective.metric"),  # causal_lm never reports accuracy
        ({"objective": {"metric": "preference_accuracy"}}, "objective.metric"),
        ({"data": {"validation_split": 0.0}}, "objective.metric"),  # no held-out data to measure on
        ({"pruner": "sometimes"}, "pruner.type"),
        ({"training_file": "file-missing"}, "training_file"),
    ],
)
def test_bad_sweeps_are_400_naming_the_path(
    client: httpx.Client, tiny_model: str, training_file: str, over: dict[str, Any], param: str
) -> None:
    r = client.post("/v1/fine_tuning/sweeps", json=sweep_body(tiny_model, training_file, **over))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()
    assert client.get("/v1/fine_tuning/sweeps", params={"limit": 1000}).status_code == 200


def test_a_grid_starts_max_parallel_trials_as_ordinary_jobs(
    client: httpx.Client, tiny_model: str, training_file: str
) -> None:
    body = sweep_body(
        tiny_model,
        training_file,
        search_space={"lora.r": {"values": [2, 4]}, "training.learning_rate": {"values": [1e-3, 1e-2]}},
        max_parallel=2,
        seed=5,
        metadata={"team": "nlp"},
    )
    r = client.post("/v1/fine_tuning/sweeps", json=body)
    assert r.status_code == 200, r.text
    sweep = r.json()
    assert sweep["object"] == "fine_tuning.sweep"
    assert sweep["status"] == "running"
    assert sweep["max_trials"] == 4  # the grid's size
    assert sweep["trials_created"] == 2
    assert sweep["trial_counts"]["queued"] == 2
    assert sweep["objective"] == {"metric": "eval_loss", "direction": "minimize"}
    trials = client.get(f"/v1/fine_tuning/sweeps/{sweep['id']}/trials").json()["data"]
    assert [t["params"] for t in trials] == [
        {"lora.r": 2, "training.learning_rate": 1e-3},
        {"lora.r": 2, "training.learning_rate": 1e-2},
    ]
    job = client.get(f"/v1/fine_tuning/jobs/{trials[1]['job_id']}").json()
    assert job["metadata"] == {"team": "nlp", "sweep_id": sweep["id"], "sweep_trial": "1"}
    assert job["spec"]["lora"]["r"] == 2 and job["spec"]["training"]["learning_rate"] == 1e-2
    assert job["seed"] == 5
    listed = client.get("/v1/fine_tuning/jobs", params={"metadata[sweep_id]": sweep["id"]}).json()["data"]
    assert {j["id"] for j in listed} == {t["job_id"] for t in trials}

    cancelled = client.post(f"/v1/fine_tuning/sweeps/{sweep['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["trial_counts"]["cancelled"] == 2
    assert client.post(f"/v1/fine_tuning/sweeps/{sweep['id']}/cancel").status_code == 409


def test_another_organizations_sweep_is_404(
    client: httpx.Client, tiny_model: str, training_file: str, other_key: str
) -> None:
    sweep = client.post("/v1/fine_tuning/sweeps", json=sweep_body(tiny_model, training_file)).json()
    other = {"Authorization": f"Bearer {other_key}"}
    for method, path in [
        ("GET", f"/v1/fine_tuning/sweeps/{sweep['id']}"),
        ("GET", f"/v1/fine_tuning/sweeps/{sweep['id']}/trials"),
        ("POST", f"/v1/fine_tuning/sweeps/{sweep['id']}/cancel"),
    ]:
        r = client.request(method, path, headers=other)
        assert r.status_code == 404, r.text
    assert sweep["id"] not in [s["id"] for s in client.get("/v1/fine_tuning/sweeps", headers=other).json()["data"]]
    assert client.post(f"/v1/fine_tuning/sweeps/{sweep['id']}/cancel").status_code == 200


def test_random_sweeps_with_one_seed_propose_the_same_first_trials(
    client: httpx.Client, tiny_model: str, training_file: str
) -> None:
    def first_params(seed: int) -> list[dict[str, Any]]:
        body = sweep_body(
            tiny_model,
            training_file,
            strategy="random",
            search_space={
                "training.learning_rate": {"log_uniform": [1e-5, 1e-2]},
                "lora.r": {"int": [2, 16], "step": 2},
                "lora.dropout": {"uniform": [0.0, 0.2]},
            },
            max_trials=6,
            max_parallel=3,
            seed=seed,
        )
        sweep = client.post("/v1/fine_tuning/sweeps", json=body).json()
        client.post(f"/v1/fine_tuning/sweeps/{sweep['id']}/cancel")
        return [t["params"] for t in client.get(f"/v1/fine_tuning/sweeps/{sweep['id']}/trials").json()["data"]]

    a, b, c = first_params(7), first_params(7), first_params(8)
    assert len(a) == 3 and a == b and a != c
    assert all(1e-5 <= p["training.learning_rate"] <= 1e-2 and p["lora.r"] % 2 == 0 for p in a)


def test_an_admin_key_lists_every_organizations_sweeps_only_when_asked(
    client: httpx.Client, tiny_model: str, training_file: str
) -> None:
    """As for jobs: an admin key lists its own organization's sweeps, every organization's with
    `all_organizations=true`, and reads any sweep by id; a non-admin asking is 403."""
    sweep = client.post("/v1/fine_tuning/sweeps", json=sweep_body(tiny_model, training_file)).json()
    client.post(f"/v1/fine_tuning/sweeps/{sweep['id']}/cancel")
    admin = {"Authorization": f"Bearer {make_key('sweep-ops', admin=True)}"}
    own = client.get("/v1/fine_tuning/sweeps", headers=admin, params={"limit": 1000}).json()["data"]
    assert sweep["id"] not in {s["id"] for s in own}
    every = client.get("/v1/fine_tuning/sweeps", headers=admin, params={"limit": 1000, "all_organizations": True})
    assert every.status_code == 200, every.text
    assert sweep["id"] in {s["id"] for s in every.json()["data"]}
    assert client.get(f"/v1/fine_tuning/sweeps/{sweep['id']}", headers=admin).status_code == 200

    r = client.get("/v1/fine_tuning/sweeps", params={"all_organizations": True})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "admin_required" and r.json()["error"]["param"] == "all_organizations"

"""`integrations` on job create: OpenAI's `wandb` block accepted and shown back in OpenAI's shape (the SDK's own
types read it), Tuneforge's `mlflow` block only for the operator's tracking servers, and every bad shape a 400
naming the field. What the worker logs is tested in tests/integration/test_integrations.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai.types.fine_tuning import FineTuningJob

from tests.conformance import Conformance, sdk_errors
from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings
from tuneforge.contract.spec import tracking_uri_allowed

MLFLOW = "http://mlflow.internal:5000"


@pytest.fixture
def training_file(client: httpx.Client) -> str:
    return upload_jsonl(client, shakespeare_rows(20))["id"]


@pytest.fixture
def mlflow_allowed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "mlflow_tracking_uris", [MLFLOW, "https://mlflow.example.com/team-a"])


def _create(client: httpx.Client, model: str, file_id: str, integrations: Any) -> httpx.Response:
    body = {"model": model, "training_file": file_id, "training": {"max_steps": 2}, "integrations": integrations}
    return client.post("/v1/fine_tuning/jobs", json=body)


def test_wandb_is_accepted_and_shown_as_openai_shows_it(
    client: httpx.Client, tiny_model: str, training_file: str, mlflow_allowed: None
) -> None:
    wandb = {"type": "wandb", "wandb": {"project": "my-project", "tags": ["nightly"], "entity": "team"}}
    r = _create(client, tiny_model, training_file, [wandb, {"type": "mlflow", "mlflow": {"experiment": "e1"}}])
    assert r.status_code == 200, r.text
    job = r.json()
    # OpenAI's field holds OpenAI's type only; strict clients check `type` against ["wandb"].
    assert job["integrations"] == [wandb]
    sdk_job = FineTuningJob.model_validate(job)
    assert sdk_job.integrations is not None and sdk_job.integrations[0].wandb.project == "my-project"
    assert sdk_errors(sdk_job) == []  # every field within the SDK's own types and Literals
    assert Conformance().errors("/components/schemas/FineTuningJob", job) == []  # and OpenAI's OpenAPI document
    # The full list, with the MLflow server filled in (the first the operator lists), is in the spec.
    assert job["spec"]["integrations"][1]["mlflow"] == {"tracking_uri": MLFLOW, "experiment": "e1", "run_name": None}
    again = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert again["integrations"] == [wandb]


def test_no_integrations_and_null_are_the_same(client: httpx.Client, tiny_model: str, training_file: str) -> None:
    job = _create(client, tiny_model, training_file, None).json()
    assert job["spec"]["integrations"] == []
    assert job.get("integrations") is None


@pytest.mark.parametrize(
    ("integrations", "param"),
    [
        ([{"type": "wandb", "wandb": {}}], "integrations.0.wandb.project"),
        ([{"type": "wandb", "wandb": {"project": "a/b"}}], "integrations.0.wandb.project"),
        ([{"type": "wandb", "wandb": {"project": "p", "team": "x"}}], "integrations.0.wandb.team"),
        ([{"type": "wandb"}], "integrations.0.wandb"),
        ([{"type": "comet", "comet": {}}], "integrations.0.type"),
        ([{"type": "wandb", "wandb": {"project": "p"}, "mlflow": {}}], "integrations.0.mlflow"),
        ([{"type": "wandb", "wandb": {"project": "p", "tags": ["x" * 65]}}], "integrations.0.wandb.tags.0"),
        ([{"type": "wandb", "wandb": {"project": "p"}}] * 2, "integrations.1"),
        ([{"type": "mlflow", "mlflow": {"tracking_uri": "file:///etc"}}], "integrations.0.mlflow.tracking_uri"),
        ([{"type": "mlflow", "mlflow": {"tracking_uri": "http://u:pw@h"}}], "integrations.0.mlflow.tracking_uri"),
        ([{"type": "mlflow", "mlflow": {"tracking_uri": "http://[1.2.3.4]/"}}], "integrations.0.mlflow.tracking_uri"),
        ([{"type": "mlflow", "mlflow": {"tracking_uri": "http://h\n:5000"}}], "integrations.0.mlflow.tracking_uri"),
    ],
)
def test_bad_shapes_are_400s_naming_the_field(
    client: httpx.Client, tiny_model: str, training_file: str, integrations: Any, param: str
) -> None:
    r = _create(client, tiny_model, training_file, integrations)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


def test_mlflow_only_for_the_operators_servers(
    client: httpx.Client, tiny_model: str, training_file: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = {"type": "mlflow", "mlflow": {"experiment": "e"}}
    r = _create(client, tiny_model, training_file, [mlflow])  # none listed: refused, whatever the URL
    assert r.status_code == 400 and r.json()["error"]["code"] == "integration_not_allowed", r.text
    assert r.json()["error"]["param"] == "integrations.0"
    monkeypatch.setattr(settings, "mlflow_tracking_uris", [MLFLOW])
    for uri in (
        "http://169.254.169.254/latest",
        "http://mlflow.internal:5001",
        "http://mlflow.internal.evil.example:5000",
    ):
        r = _create(client, tiny_model, training_file, [{"type": "mlflow", "mlflow": {"tracking_uri": uri}}])
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "integrations.0.mlflow.tracking_uri"
        assert "mlflow.internal:5000" not in r.json()["error"]["message"]  # the operator's servers are not listed
    r = _create(client, tiny_model, training_file, [{"type": "mlflow", "mlflow": {"tracking_uri": MLFLOW + "/"}}])
    assert r.status_code == 200, r.text


def test_tracking_uri_allow_list_compares_parsed_urls() -> None:
    allowed = ["http://mlflow.internal:5000", "https://mlflow.example.com/team-a"]
    assert tracking_uri_allowed("http://MLflow.internal:5000/", allowed)
    assert tracking_uri_allowed("https://mlflow.example.com/team-a/sub", allowed)
    assert tracking_uri_allowed("https://mlflow.example.com:443/team-a", allowed)
    assert not tracking_uri_allowed("https://mlflow.example.com/team-ab", allowed)
    assert not tracking_uri_allowed("https://mlflow.example.com/", allowed)
    assert not tracking_uri_allowed("http://mlflow.internal:5000@evil.example/", allowed)
    assert not tracking_uri_allowed("http://mlflow.internal", allowed)  # port 80, not 5000
    assert not tracking_uri_allowed("https://mlflow.internal:5000", allowed)

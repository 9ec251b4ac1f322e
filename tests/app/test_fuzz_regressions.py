"""What schemathesis found, kept as plain regression tests (docs/security.md lists them)."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import shakespeare_rows, upload_jsonl


def test_test_split_with_the_default_validation_split_is_a_400_not_a_500(client: httpx.Client, tiny_model: str) -> None:
    # Found by schemathesis (seed-independent; derandomized run, 300 examples):
    # {"model": "0", "training_file": "0", "data": {"test_split": 0.9375}} -> 500, because the default
    # validation_split (0.1) was assigned under validate_assignment and failed inside pydantic.
    file_id = upload_jsonl(client, shakespeare_rows(8))["id"]
    r = client.post(
        "/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id, "data": {"test_split": 0.9375}}
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "data.test_split"
    assert "0.1" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"), [("PUT", "/v1/files", "GET, POST"), ("OPTIONS", "/v1/files/file-x", "DELETE, GET")]
)
def test_405_lists_every_method_of_the_path(client: httpx.Client, method: str, path: str, allow: str) -> None:
    # Found by schemathesis (ST205): Starlette's Allow named only the first route's methods.
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow


def test_metrics_errors_are_json_as_documented(client: httpx.Client) -> None:
    # Found by schemathesis (ST105): /metrics documented its 403 as text/plain.
    r = client.get("/metrics")
    assert r.status_code == 403 and r.headers["content-type"] == "application/json"
    doc = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]["responses"]
    assert "application/json" in doc["403"]["content"] and "text/plain" in doc["200"]["content"]

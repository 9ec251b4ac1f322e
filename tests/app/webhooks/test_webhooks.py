"""Signed webhooks, end to end: a real `tuneforge api` process delivers from the outbox to a real
HTTP receiver, and the official openai SDK verifies each delivery's signature."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.helpers import WebhookReceiver, make_key, shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings

ALL_JOB_EVENTS = [
    "fine_tuning.job.running",
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
]


@pytest.fixture(scope="module")
def org_key() -> str:
    return make_key("webhooks-co")


@pytest.fixture
def api(live_api: str, org_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {org_key}"}, timeout=30) as c:
        yield c
        for hook in c.get("/v1/webhooks", params={"limit": 100}).json()["data"]:
            c.delete(f"/v1/webhooks/{hook['id']}")


def create_hook(api: httpx.Client, url: str, events: list[str]) -> dict[str, Any]:
    r = api.post("/v1/webhooks", json={"url": url, "events": events})
    assert r.status_code == 200, r.text
    return r.json()


def wait_log(api: httpx.Client, hook_id: str, done: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The delivery log once `done` deliveries are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        rows = api.get(f"/v1/webhooks/{hook_id}/deliveries").json()["data"]
        if sum(d["state"] != "pending" for d in rows) >= done or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_endpoints_create_list_delete(api: httpx.Client, api_key: str, live_api: str) -> None:
    hook = create_hook(api, "https://example.com/hook", ["fine_tuning.job.succeeded"])
    assert hook["object"] == "webhook_endpoint" and hook["id"].startswith("wh-")
    assert hook["secret"].startswith("whsec_")
    listed = api.get("/v1/webhooks").json()["data"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]  # shown once, at creation
    other = httpx.get(f"{live_api}/v1/webhooks/{hook['id']}", headers={"Authorization": f"Bearer {api_key}"})
    assert other.status_code == 404  # another organization's endpoint does not exist for it
    gone = api.delete(f"/v1/webhooks/{hook['id']}")
    assert gone.json() == {"id": hook["id"], "object": "webhook_endpoint", "deleted": True}
    assert api.get(f"/v1/webhooks/{hook['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "ftp://example.com/x", "events": ["fine_tuning.job.failed"]}, "url"),
        ({"url": "https://example.com/x", "events": ["fine_tuning.job.exploded"]}, "events.0"),
        ({"url": "https://example.com/x", "events": []}, "events"),
        ({"url": "https://example.com/x", "events": ["fine_tuning.job.failed"], "extra": 1}, "extra"),
    ],
)
def test_bad_endpoints_are_400_naming_the_field(api: httpx.Client, body: dict[str, Any], param: str) -> None:
    r = api.post("/v1/webhooks", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
        "http://localhost/",
    ],
)
def test_private_targets_are_refused_by_default(url: str) -> None:
    from tuneforge.app.webhooks.ssrf import UnsafeURL, check_url

    with pytest.raises(UnsafeURL, match="private or loopback"):
        check_url(url, allow_private=False)
    check_url(url, allow_private=True)


def test_private_target_is_a_400_through_the_api(
    client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "webhooks_allow_private", False)
    r = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:8000/x", "events": ["fine_tuning.job.failed"]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "url" and "TUNEFORGE_WEBHOOKS_ALLOW_PRIVATE" in r.json()["error"]["message"]


def test_cancel_is_delivered_signed_and_retried(api: httpx.Client, tiny_model: str) -> None:
    """A receiver that fails once gets the same event (same webhook-id) again after a backoff; the
    SDK verifies the signature; the log shows both attempts and their status codes."""
    with WebhookReceiver(statuses=[500]) as receiver:
        hook = create_hook(api, receiver.url, ALL_JOB_EVENTS)
        file_id = upload_jsonl(api, shakespeare_rows(5))["id"]
        job = api.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id}).json()
        assert api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        received = receiver.wait(2)
    assert len(received) == 2, received
    (_, headers1), (body2, headers2) = received
    assert headers1["webhook-id"] == headers2["webhook-id"]  # a retry is the same event
    sdk = OpenAI(api_key="unused")
    event = sdk.webhooks.unwrap(body2, headers2, secret=hook["secret"])
    assert event.type == "fine_tuning.job.cancelled"
    assert event.data.id == job["id"]
    payload = json.loads(body2)
    assert set(payload) == {"id", "object", "created_at", "type", "data"}
    assert payload["object"] == "event" and payload["id"] == headers2["webhook-id"]
    from openai import InvalidWebhookSignatureError

    with pytest.raises(InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(body2, headers2, secret="whsec_" + "QUFB" * 11)
    log = wait_log(api, hook["id"], 1)
    assert [(d["type"], d["state"]) for d in log] == [("fine_tuning.job.cancelled", "delivered")]
    assert [a["status_code"] for a in log[0]["attempts"]] == [500, 200]


def test_a_dead_receiver_fails_after_max_attempts(api: httpx.Client, tiny_model: str) -> None:
    from tuneforge.app.core.config import get_settings

    hook = create_hook(api, "http://127.0.0.1:9/nothing-listens", ["fine_tuning.job.cancelled"])
    file_id = upload_jsonl(api, shakespeare_rows(5))["id"]
    job = api.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id}).json()
    api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    # Backoff 0.3 s doubling: 8 attempts take about a minute; the first few are enough to check.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = api.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
        if log and len(log[0]["attempts"]) >= 3:
            break
        time.sleep(0.2)
    attempts = log[0]["attempts"]
    assert len(attempts) >= 3 and all(a["status_code"] is None and a["error"] for a in attempts)
    assert log[0]["state"] in ("pending", "failed") and get_settings().webhook_max_attempts > 3

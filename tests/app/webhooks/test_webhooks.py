"""Signed webhooks, end to end: a real `tuneforge api` process delivers from the outbox to a real
HTTP receiver, and the official openai SDK verifies each delivery's signature."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
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


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook\t",
        "https://example.com/\nhook",
        "https://example.com/hook\u0000",
        "https://example.com/hook\u007f",
        "https://exa mple.com/hook",
        "http://[::1/",
        "http://[1.2.3.4]/",
        "http://example.com:99999/",
    ],
)
def test_malformed_urls_are_400_naming_url(api: httpx.Client, url: str) -> None:
    """Control characters passed (urlsplit drops tabs and newlines) and then broke every delivery in
    httpx; malformed brackets were a 500 (ValueError)."""
    r = api.post("/v1/webhooks", json={"url": url, "events": ["fine_tuning.job.failed"]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "url" and r.json()["error"]["code"] == "invalid_url"


def test_the_refusal_does_not_say_what_a_name_resolves_to() -> None:
    """A host name inside and one that does not resolve get the same answer, naming no address, so the
    check is no DNS oracle for internal names; an address the URL itself spells may be named."""
    from tuneforge.app.webhooks.ssrf import UnsafeURL, check_url

    messages = {}
    for host in ("localhost", "no-such-host.invalid"):
        with pytest.raises(UnsafeURL) as refused:
            check_url(f"http://{host}/x", allow_private=False)
        messages[host] = str(refused.value).replace(repr(host), "HOST")
        assert "127.0.0.1" not in str(refused.value) and "::1" not in str(refused.value)
    assert messages["localhost"] == messages["no-such-host.invalid"]


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


class HangingReceiver:
    """A TCP listener that accepts connections and never answers: each POST to it holds the
    deliverer's thread until the webhook timeout (10 s by default)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hang"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.conns.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def _attempts(endpoint_ids: list[str]) -> list[tuple[str, int, str | None]]:
    """(state, attempts, last error) of every delivery to these endpoints; a delivery whose attempt
    is recorded is no longer claimed (state "claimed" if it is)."""
    from sqlalchemy import select

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import WebhookAttempt, WebhookDelivery

    with session_scope() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id.in_(endpoint_ids))).all()
        out = []
        for d in rows:
            last = s.scalars(
                select(WebhookAttempt.error).where(WebhookAttempt.delivery_id == d.id).order_by(WebhookAttempt.seq)
            ).all()
            state = "claimed" if d.claimed_until is not None else d.state
            out.append((state, d.attempts, last[-1] if last else None))
        return out


def test_one_tenants_broken_and_hanging_endpoints_do_not_delay_anothers(live_api: str, tiny_model: str) -> None:
    """Organization A has 10 endpoints whose URL holds a tab (stored before registration refused
    them: httpx raises InvalidURL) and 12 that never answer; organization B has one healthy endpoint.
    B's delivery arrives while every one of A's hanging posts is still hanging (it used to wait
    behind them in the same batch, and the broken ones stayed claimed, unrecorded, first in line
    forever), and A's broken deliveries are recorded as failed attempts that back off."""
    from tuneforge.app.auth.service import get_or_create_org
    from tuneforge.app.core.ids import new_id
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import WebhookEndpoint
    from tuneforge.app.webhooks.signing import new_secret

    key_a, key_b = make_key("webhooks-hostile"), make_key("webhooks-victim")
    event = ["fine_tuning.job.cancelled"]
    hanging = HangingReceiver()
    a = httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {key_a}"}, timeout=30)
    b = httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {key_b}"}, timeout=30)
    try:
        with session_scope() as s:
            org_a = get_or_create_org(s, "webhooks-hostile").id
            broken = [new_id("wh") for _ in range(10)]
            for wid in broken:
                s.add(
                    WebhookEndpoint(
                        id=wid, organization_id=org_a, url="http://127.0.0.1:9/\t", events=event, secret=new_secret()
                    )
                )
        hung = [create_hook(a, hanging.url, event)["id"] for _ in range(12)]
        with WebhookReceiver() as receiver:
            create_hook(b, receiver.url, event)
            for client in (a, b):  # A's event first, so its 22 deliveries are due before B's one
                file_id = upload_jsonl(client, shakespeare_rows(5))["id"]
                job = client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id}).json()
                assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
            assert len(receiver.wait(1)) == 1
            still_hanging = _attempts(hung)
        assert len(still_hanging) == 12 and all(attempts == 0 for _, attempts, _ in still_hanging), still_hanging
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            failed = _attempts(broken)
            if len(failed) == 10 and all(n >= 1 for _, n, _ in failed):
                break
            time.sleep(0.2)
        # Each was tried and recorded with its reason, and waits for its retry unclaimed (it stayed
        # claimed, with no attempt, and was retried first for ever).
        assert len(failed) == 10 and all(state == "pending" and n >= 1 and err for state, n, err in failed), failed
        assert all("control characters" in (err or "") for _, _, err in failed), failed
    finally:
        hanging.close()
        for client in (a, b):
            for hook in client.get("/v1/webhooks", params={"limit": 100}).json()["data"]:
                client.delete(f"/v1/webhooks/{hook['id']}")
            client.close()

"""Webhook use cases: manage endpoints, and emit events into the outbox.

Emitting is one call, inside the transaction that made the change: a job's from its status
transition (tuneforge/app/jobs/lifecycle.py), a sweep's from the sweep service when the sweep ends. The
delivery rows commit with the change or not at all, and the deliverer (a thread in each API process,
tuneforge/app/webhooks/deliverer.py) posts them later. Nothing is sent from inside a request.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tuneforge.app.auth.service import Principal
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import InvalidRequest, NotFound
from tuneforge.app.core.ids import new_id
from tuneforge.app.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tuneforge.app.db.types import unix, utcnow
from tuneforge.app.webhooks import repository
from tuneforge.app.webhooks.events import WebhookEvent
from tuneforge.app.webhooks.signing import new_secret
from tuneforge.app.webhooks.ssrf import UnsafeURL, check_url


def create_endpoint(
    session: Session, settings: Settings, principal: Principal, url: str, events: list[WebhookEvent]
) -> WebhookEndpoint:
    try:
        check_url(url, allow_private=settings.webhooks_allow_private)
    except UnsafeURL as exc:
        raise InvalidRequest(str(exc), param="url", code="invalid_url") from exc
    endpoint = WebhookEndpoint(
        id=new_id("wh"),
        organization_id=principal.organization_id,
        url=url,
        events=list(dict.fromkeys(e.value for e in events)),
        secret=new_secret(),
    )
    return repository.add_endpoint(session, endpoint)


def get_endpoint(session: Session, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
    endpoint = repository.get_endpoint(session, principal.organization_id, endpoint_id)
    if endpoint is None:
        raise NotFound(f"No such webhook endpoint: {endpoint_id}", param="webhook_id", code="webhook_not_found")
    return endpoint


def list_endpoints(session: Session, principal: Principal, *, after: str | None, limit: int) -> list[WebhookEndpoint]:
    return repository.endpoints_page(session, principal.organization_id, after=after, limit=limit)


def delete_endpoint(session: Session, principal: Principal, endpoint_id: str) -> None:
    repository.delete_endpoint(session, get_endpoint(session, principal, endpoint_id).id)


def list_deliveries(
    session: Session, principal: Principal, endpoint_id: str, *, after: str | None, limit: int
) -> tuple[list[WebhookDelivery], dict[str, list[WebhookAttempt]]]:
    endpoint = get_endpoint(session, principal, endpoint_id)
    rows = repository.deliveries_page(session, endpoint.id, after=after, limit=limit)
    return rows, repository.attempts_of(session, [d.id for d in rows])


# ----------------------------------------------------------------------------- emitting


def _enqueue(session: Session, endpoints: list[WebhookEndpoint], event: WebhookEvent, data: dict[str, Any]) -> int:
    subscribed = [e for e in endpoints if event.value in e.events]
    if not subscribed:
        return 0
    event_id = new_id("evt")
    payload = {"id": event_id, "object": "event", "created_at": unix(utcnow()), "type": event.value, "data": data}
    for endpoint in subscribed:
        repository.add_delivery(
            session,
            WebhookDelivery(
                id=new_id("whdel"), endpoint_id=endpoint.id, event_id=event_id, type=event.value, payload=payload
            ),
        )
    session.flush()
    return len(subscribed)


def emit_job_event(session: Session, job_id: str, event: WebhookEvent) -> int:
    """Queue a job's event (`fine_tuning.job.*`) for every endpoint of its organization that
    subscribed to it. tuneforge/app/jobs/lifecycle.py calls it, in the transaction that changed the
    job's status, with the event its transition names. Returns how many deliveries were queued."""
    return _enqueue(session, repository.endpoints_of_job_org(session, job_id), event, {"id": job_id})


def emit_sweep_completed(session: Session, org_id: str, sweep_id: str) -> int:
    """`fine_tuning.sweep.completed`: one call from the sweep service when a sweep finishes
    (succeeded, failed or cancelled), in the transaction that finished it."""
    endpoints = repository.endpoints_of_org(session, org_id)
    return _enqueue(session, endpoints, WebhookEvent.SWEEP_COMPLETED, {"id": sweep_id})

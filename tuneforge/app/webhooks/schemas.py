from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.app.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tuneforge.app.db.types import unix
from tuneforge.app.webhooks.events import WebhookEvent


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="Where events are POSTed (http or https, a public address).")
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(WebhookEvent))


class WebhookEndpointObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str]
    created_at: int

    @classmethod
    def of(cls, e: WebhookEndpoint) -> WebhookEndpointObject:
        return cls(id=e.id, url=e.url, events=list(e.events), created_at=unix(e.created_at) or 0)


class WebhookEndpointWithSecret(WebhookEndpointObject):
    secret: str = Field(description="The `whsec_` signing secret. Shown once, here.")

    @classmethod
    def created(cls, e: WebhookEndpoint) -> WebhookEndpointWithSecret:
        return cls(id=e.id, url=e.url, events=list(e.events), created_at=unix(e.created_at) or 0, secret=e.secret)


class DeliveryAttempt(BaseModel):
    created_at: int
    status_code: int | None
    error: str | None
    duration_ms: int

    @classmethod
    def of(cls, a: WebhookAttempt) -> DeliveryAttempt:
        return cls(
            created_at=unix(a.created_at) or 0, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms
        )


class WebhookDeliveryObject(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    event_id: str
    type: str
    state: Literal["pending", "delivered", "failed"]
    attempts: list[DeliveryAttempt]
    last_status_code: int | None
    created_at: int
    next_attempt_at: int | None
    delivered_at: int | None

    @classmethod
    def of(cls, d: WebhookDelivery, attempts: list[WebhookAttempt]) -> WebhookDeliveryObject:
        return cls(
            id=d.id,
            event_id=d.event_id,
            type=d.type,
            state=d.state,  # type: ignore[arg-type]
            attempts=[DeliveryAttempt.of(a) for a in attempts],
            last_status_code=d.last_status_code,
            created_at=unix(d.created_at) or 0,
            next_attempt_at=unix(d.next_attempt_at) if d.state == "pending" else None,
            delivered_at=unix(d.delivered_at),
        )

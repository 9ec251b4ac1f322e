from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tuneforge.app.core.schemas import DeletedResponse, ListResponse, error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.webhooks import service
from tuneforge.app.webhooks.schemas import (
    WebhookCreate,
    WebhookDeliveryObject,
    WebhookEndpointObject,
    WebhookEndpointWithSecret,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=error_responses(404))
Limit = Annotated[int, Query(ge=1, le=100)]


@router.post("", response_model=WebhookEndpointWithSecret)
def create_webhook(
    body: WebhookCreate, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> WebhookEndpointWithSecret:
    """Register a URL for events. The response carries the `whsec_` signing secret, shown only here."""
    endpoint = service.create_endpoint(session, settings, principal, body.url, body.events)
    session.commit()
    return WebhookEndpointWithSecret.created(endpoint)


@router.get("", response_model=ListResponse[WebhookEndpointObject])
def list_webhooks(
    session: SessionDep, principal: PrincipalDep, after: str | None = None, limit: Limit = 20
) -> ListResponse[WebhookEndpointObject]:
    rows = service.list_endpoints(session, principal, after=after, limit=limit)
    return ListResponse[WebhookEndpointObject].page([WebhookEndpointObject.of(e) for e in rows], limit)


@router.get("/{webhook_id}", response_model=WebhookEndpointObject)
def retrieve_webhook(webhook_id: str, session: SessionDep, principal: PrincipalDep) -> WebhookEndpointObject:
    return WebhookEndpointObject.of(service.get_endpoint(session, principal, webhook_id))


@router.delete("/{webhook_id}", response_model=DeletedResponse)
def delete_webhook(webhook_id: str, session: SessionDep, principal: PrincipalDep) -> DeletedResponse:
    service.delete_endpoint(session, principal, webhook_id)
    session.commit()
    return DeletedResponse(id=webhook_id, object="webhook_endpoint", deleted=True)


@router.get("/{webhook_id}/deliveries", response_model=ListResponse[WebhookDeliveryObject])
def list_deliveries(
    webhook_id: str, session: SessionDep, principal: PrincipalDep, after: str | None = None, limit: Limit = 20
) -> ListResponse[WebhookDeliveryObject]:
    """The delivery log, newest first: each event sent to this endpoint, its attempts and their status codes."""
    rows, attempts = service.list_deliveries(session, principal, webhook_id, after=after, limit=limit)
    return ListResponse[WebhookDeliveryObject].page([WebhookDeliveryObject.of(d, attempts[d.id]) for d in rows], limit)

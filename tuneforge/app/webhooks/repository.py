"""Every query on webhook endpoints, their outbox of deliveries and the attempts log. A delivery is
claimed with a conditional update, so several API processes can run the deliverer at once."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, select, update
from sqlalchemy.orm import Session

from tuneforge.app.db import paging
from tuneforge.app.db.models import Job, WebhookAttempt, WebhookDelivery, WebhookEndpoint

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def add_endpoint(session: Session, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint(session: Session, org_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    return session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.organization_id == org_id)
    )


def endpoints_page(session: Session, org_id: str, *, after: str | None, limit: int) -> list[WebhookEndpoint]:
    scope = [WebhookEndpoint.organization_id == org_id]
    stmt = select(WebhookEndpoint).where(*scope)
    return paging.page(session, stmt, WebhookEndpoint, after=after, limit=limit, cursor_scope=scope)


def delete_endpoint(session: Session, endpoint_id: str) -> None:
    # Explicit: SQLite enforces ON DELETE CASCADE only with its pragma, and the log goes with the endpoint.
    delivery_ids = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
    session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))


def endpoints_of_org(session: Session, org_id: str) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.organization_id == org_id)))


def endpoints_of_job_org(session: Session, job_id: str) -> list[WebhookEndpoint]:
    """The endpoints of the organization that owns a job, in one query."""
    org = select(Job.organization_id).where(Job.id == job_id).scalar_subquery()
    return list(session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.organization_id == org)))


def add_delivery(session: Session, delivery: WebhookDelivery) -> None:
    session.add(delivery)


def deliveries_page(session: Session, endpoint_id: str, *, after: str | None, limit: int) -> list[WebhookDelivery]:
    scope = [WebhookDelivery.endpoint_id == endpoint_id]
    stmt = select(WebhookDelivery).where(*scope)
    return paging.page(session, stmt, WebhookDelivery, after=after, limit=limit, cursor_scope=scope)


def attempts_of(session: Session, delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    out: dict[str, list[WebhookAttempt]] = {d: [] for d in delivery_ids}
    if delivery_ids:
        stmt = select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids)).order_by(WebhookAttempt.seq)
        for a in session.scalars(stmt):
            out[a.delivery_id].append(a)
    return out


# ----------------------------------------------------------------------------- the deliverer


def _unclaimed(now: dt.datetime) -> Any:
    return or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now)


def due(session: Session, now: dt.datetime, limit: int) -> list[str]:
    stmt = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.state == PENDING, WebhookDelivery.next_attempt_at <= now, _unclaimed(now))
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def claim(session: Session, delivery_id: str, now: dt.datetime, until: dt.datetime) -> bool:
    """Take a due delivery until `until`. Another process claiming the same row loses the race."""
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.state == PENDING,
            WebhookDelivery.next_attempt_at <= now,
            _unclaimed(now),
        )
        .values(claimed_until=until)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def delivery_with_endpoint(session: Session, delivery_id: str) -> tuple[WebhookDelivery, WebhookEndpoint] | None:
    row = session.execute(
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id == delivery_id)
    ).first()
    return (row[0], row[1]) if row is not None else None


def record_attempt(
    session: Session,
    delivery_id: str,
    *,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    next_attempt_at: dt.datetime | None,
    now: dt.datetime,
) -> None:
    """Log one POST and move the delivery on: delivered (2xx), retried at `next_attempt_at`, or
    failed for good when `next_attempt_at` is None."""
    session.add(WebhookAttempt(delivery_id=delivery_id, status_code=status_code, error=error, duration_ms=duration_ms))
    ok = status_code is not None and 200 <= status_code < 300
    values: dict[str, Any] = {
        "attempts": WebhookDelivery.attempts + 1,
        "last_status_code": status_code,
        "claimed_until": None,
    }
    if ok:
        values.update(state=DELIVERED, delivered_at=now)
    elif next_attempt_at is None:
        values.update(state=FAILED)
    else:
        values.update(next_attempt_at=next_attempt_at)
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values))

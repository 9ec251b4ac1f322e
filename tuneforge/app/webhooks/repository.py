"""Every query on webhook endpoints, their outbox of deliveries and the attempts log. A delivery is
claimed with a conditional update, so several API processes can run the deliverer at once."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, or_, select, update
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


def due(
    session: Session, now: dt.datetime, limit: int, *, max_turn: int, skip_orgs: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """Up to `limit` due deliveries as (id, organization), taken in turns across organizations: every
    organization's oldest due delivery first, then every organization's second, and so on up to
    `max_turn` per organization. One
    tenant's backlog (thousands of deliveries to endpoints that fail or hang) therefore never queues
    another tenant's deliveries behind it. Organizations in `skip_orgs` (already at their share of
    the posting threads) are left out."""
    org = WebhookEndpoint.organization_id
    turn = func.row_number().over(partition_by=org, order_by=(WebhookDelivery.next_attempt_at, WebhookDelivery.seq))
    candidates = (
        select(WebhookDelivery.id, org.label("org"), WebhookDelivery.next_attempt_at, turn.label("turn"))
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.state == PENDING, WebhookDelivery.next_attempt_at <= now, _unclaimed(now))
    )
    if skip_orgs:
        candidates = candidates.where(org.not_in(skip_orgs))
    sub = candidates.subquery()
    stmt = (
        select(sub.c.id, sub.c.org)
        .where(sub.c.turn <= max_turn)
        .order_by(sub.c.turn, sub.c.next_attempt_at)
        .limit(limit)
    )
    return [(row.id, row.org) for row in session.execute(stmt)]


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

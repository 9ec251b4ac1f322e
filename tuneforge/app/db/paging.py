"""Keyset paging, written once: `after=<id>` resolves to that row's `seq`, and a page holds one row
more than `limit` so that `ListResponse.page` can tell whether more exist without a count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from tuneforge.app.db.models import (
    Checkpoint,
    CheckpointPermission,
    File,
    Job,
    JobEvent,
    Sweep,
    WebhookDelivery,
    WebhookEndpoint,
)

T = TypeVar("T")
# The tables with a public `id` and an insertion-ordered `seq`.
Paged = (
    type[File]
    | type[Job]
    | type[JobEvent]
    | type[Checkpoint]
    | type[WebhookEndpoint]
    | type[WebhookDelivery]
    | type[Sweep]
    | type[CheckpointPermission]
)


def page(
    session: Session,
    stmt: Select[T],
    model: Paged,
    *,
    after: str | None,
    limit: int,
    ascending: bool = False,
    cursor_scope: Sequence[ColumnElement[bool]] = (),
) -> list[T]:
    """Rows of `stmt` after the row whose id is `after` (newest first unless `ascending`), at most
    limit+1 of them. `cursor_scope` limits where the cursor id is looked up: an id from another
    organization or job resolves to nothing, and the page is then empty."""
    if after:
        cursor = select(model.seq).where(model.id == after, *cursor_scope).scalar_subquery()
        stmt = stmt.where(model.seq > cursor if ascending else model.seq < cursor)
    order = model.seq.asc() if ascending else model.seq.desc()
    return list(session.scalars(stmt.order_by(order).limit(limit + 1)))

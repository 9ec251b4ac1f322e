from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class ListResponse(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def page(cls, items: list[T], limit: int, key: str = "id") -> ListResponse[T]:
        """`items` holds up to limit+1 rows; the extra one only tells whether more exist."""
        data = items[:limit]
        return cls(
            data=data,
            has_more=len(items) > limit,
            first_id=getattr(data[0], key, None) if data else None,
            last_id=getattr(data[-1], key, None) if data else None,
        )


class DeletedResponse(BaseModel):
    id: str
    object: str
    deleted: bool

from __future__ import annotations

from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


def _is_none(value: object) -> bool:
    return value is None


def omitted_if_none(description: str | None = None, **kw: Any) -> Any:
    """A field that is left out of the JSON when it has no value, instead of sent as null: OpenAI's
    OpenAPI document types many optional fields without null (`expires_at`, `data`, checkpoint
    metrics), and strictly typed clients refuse a null there (docs/api.md, "Conformance")."""
    return Field(None, description=description, exclude_if=_is_none, **kw)


class ListResponse(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = omitted_if_none("The first object's id; absent when the page is empty.")
    last_id: str | None = omitted_if_none("The last object's id (the next page's `after`); absent when empty.")

    @classmethod
    def page(cls, items: list[T], limit: int, key: str = "id") -> Self:
        """`items` holds up to limit+1 rows; the extra one only tells whether more exist. An empty
        page passes no ids, so each list keeps its own default (see `FileList`)."""
        data = items[:limit]
        if not data:
            return cls(data=data, has_more=False)
        return cls(
            data=data, has_more=len(items) > limit, first_id=getattr(data[0], key), last_id=getattr(data[-1], key)
        )


class DeletedResponse(BaseModel):
    id: str
    object: str
    deleted: bool


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope."""

    error: ErrorBody


_ERROR_TEXT = {
    400: "Invalid request; `error.param` names the field.",
    401: "Missing, invalid or revoked API key.",
    403: "Needs an admin key.",
    404: "No such object in your organization.",
    409: "Conflicts with the object's state (or a reused Idempotency-Key).",
    413: "The upload is over the size limit.",
    429: "Over a per-organization limit; see Retry-After.",
    503: "The database is unavailable; retry shortly.",
    504: "A worker did not finish the request in time.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the errors a route can answer with (always 400, 401 and 503)."""
    return {
        code: {"model": ErrorResponse, "description": _ERROR_TEXT[code]} for code in sorted({400, 401, 503, *codes})
    }

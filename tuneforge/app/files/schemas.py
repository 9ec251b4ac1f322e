from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tuneforge.app.core.schemas import ListResponse, omitted_if_none
from tuneforge.app.db.models import File
from tuneforge.app.db.types import unix
from tuneforge.contract.formats import Shape, detect_columns


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = omitted_if_none("Not used: validation problems are a 400 at upload.")
    expires_at: int | None = omitted_if_none("Files do not expire here.")
    # Tuneforge additions: what upload validation found.
    sha256: str = Field(description="SHA-256 of the stored bytes.")
    format: Literal["jsonl", "csv"]
    n_rows: int
    columns: dict[str, Any] = Field(description="Per column: types seen, non-null count, numeric, distinct values.")
    data_format: Shape | None = Field(
        None,
        description="The rows' shape detected from the columns: messages, alpaca, sharegpt, prompt_completion or "
        "text (null: none of them, e.g. classification data without a `text` column).",
    )

    @classmethod
    def of(cls, f: File) -> FileObject:
        return cls(
            id=f.id,
            bytes=f.bytes,
            created_at=unix(f.created_at) or 0,
            filename=f.filename,
            purpose=f.purpose,
            status=f.status,
            sha256=f.sha256,
            format=f.format,
            n_rows=f.n_rows,
            columns=f.columns,
            data_format=detect_columns(f.columns or {}),
        )


class FileList(ListResponse[FileObject]):
    """OpenAI's ListFilesResponse requires `first_id` and `last_id` as strings, so an empty page
    sends them empty instead of leaving them out."""

    first_id: str = Field("", description="The first file's id; empty when the page is empty.")
    last_id: str = Field("", description="The last file's id (the next page's `after`); empty when empty.")

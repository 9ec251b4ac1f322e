"""OpenAI's Upload and Upload Part objects, and the two JSON bodies (create, complete)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.app.db.models import File, Upload, UploadPart
from tuneforge.app.db.types import unix
from tuneforge.app.files.schemas import FileObject
from tuneforge.app.uploads.status import UploadStatus


class UploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255, description="The file's name (kept as data, never a path).")
    purpose: Literal["fine-tune"]
    bytes: int = Field(ge=1, description="The file's size: the parts must add up to exactly this.")
    mime_type: str = Field(
        min_length=1, max_length=255, description="`text/jsonl`, `application/jsonl`, `text/csv`, ..."
    )


class UploadComplete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_ids: list[str] = Field(min_length=1, max_length=10_000, description="Every part, in the file's order.")
    md5: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{32}$", description="MD5 of the whole file (hex); a mismatch is a 400."
    )


class UploadObject(BaseModel):
    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: UploadStatus
    expires_at: int
    file: FileObject | None = Field(None, description="The file, once the upload is completed.")

    @classmethod
    def of(cls, upload: Upload, now: dt.datetime, file: File | None = None) -> UploadObject:
        return cls(
            id=upload.id,
            bytes=upload.bytes,
            created_at=unix(upload.created_at) or 0,
            filename=upload.filename,
            purpose=upload.purpose,
            status=shown_status(upload, now),
            expires_at=unix(upload.expires_at) or 0,
            file=FileObject.of(file) if file is not None else None,
        )


def shown_status(upload: Upload, now: dt.datetime) -> UploadStatus:
    """A pending upload past its expiry is expired from that moment, whether or not the sweeper has
    marked it yet (unless a completion that began in time is still running)."""
    if upload.status == UploadStatus.PENDING and upload.expires_at <= now and upload.completing_since is None:
        return UploadStatus.EXPIRED
    return upload.status


class UploadPartObject(BaseModel):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str

    @classmethod
    def of(cls, part: UploadPart) -> UploadPartObject:
        return cls(id=part.id, created_at=unix(part.created_at) or 0, upload_id=part.upload_id)

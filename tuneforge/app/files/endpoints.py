from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tuneforge.app.core.errors import InvalidRequest, PayloadTooLarge
from tuneforge.app.core.schemas import DeletedResponse, error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.files import service
from tuneforge.app.files.schemas import FileList, FileObject
from tuneforge.app.files.slots import UploadSlot
from tuneforge.app.files.spool import MULTIPART_OVERHEAD, declared_too_large, size_limited, too_large

router = APIRouter(prefix="/v1/files", tags=["files"], responses=error_responses(404))


@router.post(
    "",
    response_model=FileObject,
    responses=error_responses(409, 413, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "purpose"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"type": "string", "enum": ["fine-tune"]},
                        },
                    }
                }
            },
        }
    },
)
async def upload_file(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    _slot: UploadSlot,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> FileObject:
    """Upload a JSONL or CSV dataset (up to TUNEFORGE_MAX_UPLOAD_MB, 512 MB by default; larger ones go
    through `/v1/uploads` in parts). It is validated whole; errors name their line."""
    limit = settings.max_upload_mb << 20
    if declared_too_large(request, limit):
        raise too_large(limit, "file")
    # Parsed here rather than by FastAPI so that a malformed body is a clear 400 and the size
    # limit is applied while the bytes stream in, not after they were all buffered.
    try:
        form = await size_limited(request, limit + MULTIPART_OVERHEAD, "file").form(max_files=1, max_fields=8)
    except PayloadTooLarge:
        raise
    except Exception as exc:
        raise InvalidRequest("The body must be multipart/form-data with `file` and `purpose`.") from exc
    file = form.get("file")
    purpose = form.get("purpose")
    if not isinstance(file, UploadFile):
        raise InvalidRequest("Missing the `file` part.", param="file")
    if not isinstance(purpose, str):
        raise InvalidRequest("Missing the `purpose` field.", param="purpose")
    record = await service.upload(session, settings, principal, file, purpose, idempotency_key)
    await run_in_threadpool(session.commit)
    return FileObject.of(record)


@router.get("", response_model=FileList)
def list_files(
    session: SessionDep,
    principal: PrincipalDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    rows = service.list_files(session, principal, purpose=purpose, after=after, limit=limit, ascending=order == "asc")
    return FileList.page([FileObject.of(f) for f in rows], limit)


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, session: SessionDep, principal: PrincipalDep) -> FileObject:
    return FileObject.of(service.get(session, principal, file_id))


@router.get("/{file_id}/content", response_class=FileResponse, responses=error_responses(503))
def file_content(file_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> Response:
    f = service.get(session, principal, file_id)
    media = "application/jsonl" if f.format == "jsonl" else "text/csv"
    body = service.content(settings, f)
    if body.path is not None:
        return FileResponse(body.path, media_type=media, filename=f.filename)
    if body.redirect is not None:
        return RedirectResponse(body.redirect, status_code=307)
    assert body.chunks is not None
    disposition = {"Content-Disposition": f'attachment; filename="{quote(f.filename)}"'}
    return StreamingResponse(body.chunks, media_type=media, headers=disposition)


@router.delete("/{file_id}", response_model=DeletedResponse, responses=error_responses(409))
def delete_file(file_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> DeletedResponse:
    service.delete(session, settings, principal, file_id)
    session.commit()
    return DeletedResponse(id=file_id, object="file", deleted=True)

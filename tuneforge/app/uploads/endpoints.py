"""`/v1/uploads`: OpenAI's Uploads API (create, add part, complete, cancel). The official SDK's
`client.uploads.upload_file_chunked(...)` drives it unchanged."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tuneforge.app.core.schemas import error_responses
from tuneforge.app.db.types import utcnow
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.files.slots import UploadSlot
from tuneforge.app.uploads import service
from tuneforge.app.uploads.schemas import UploadComplete, UploadCreate, UploadObject, UploadPartObject

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses=error_responses(404))


@router.post("", response_model=UploadObject, responses=error_responses(413))
def create_upload(
    body: UploadCreate, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> UploadObject:
    """Start an upload of `bytes` bytes, to be sent in parts. It expires unless completed within
    TUNEFORGE_UPLOAD_EXPIRES_SECONDS (an hour). Its bytes count against the organization's quota now."""
    upload = service.create(session, settings, principal, body)
    session.commit()
    return UploadObject.of(upload, utcnow())


@router.post(
    "/{upload_id}/parts",
    response_model=UploadPartObject,
    responses=error_responses(409, 413, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {"data": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def add_upload_part(
    upload_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    _slot: UploadSlot,
) -> UploadPartObject:
    """Add a part (at most TUNEFORGE_MAX_UPLOAD_PART_MB, 64 MB). Parts may be sent in any order and in
    parallel; `complete` names their order."""
    part = await service.add_part(session, settings, principal, upload_id, request)
    await run_in_threadpool(session.commit)
    return UploadPartObject.of(part)


@router.post("/{upload_id}/complete", response_model=UploadObject, responses=error_responses(409, 429, 503))
async def complete_upload(
    upload_id: str,
    body: UploadComplete,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    _slot: UploadSlot,
) -> UploadObject:
    """Assemble the parts in the order of `part_ids` into a file, validated like `POST /v1/files`
    (errors name their line), and checked against `md5` when given. Returns the upload with `file`."""
    claim = await run_in_threadpool(service.claim, session, principal, upload_id, body)
    await run_in_threadpool(session.commit)
    upload, file = await service.finish_in_thread(settings, claim)
    return UploadObject.of(upload, utcnow(), file)


@router.post("/{upload_id}/cancel", response_model=UploadObject, responses=error_responses(409))
def cancel_upload(upload_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> UploadObject:
    """Cancel a pending upload and remove its parts. Cancelling it again returns it unchanged."""
    upload = service.cancel(session, settings, principal, upload_id)
    session.commit()
    if not upload.parts_removed and service.remove_parts(session, settings, upload):
        session.commit()
    return UploadObject.of(upload, utcnow())

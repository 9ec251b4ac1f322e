from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from tuneforge.app.core.schemas import error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.permissions import service
from tuneforge.app.permissions.schemas import PermissionCreate, PermissionDeleted, PermissionList, PermissionObject

router = APIRouter(prefix="/v1/fine_tuning/checkpoints", tags=["fine-tuning"], responses=error_responses(404))


@router.post(
    "/{fine_tuned_model_checkpoint:path}/permissions", response_model=PermissionList, responses=error_responses(403)
)
def create_permissions(
    fine_tuned_model_checkpoint: str,
    body: PermissionCreate,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> PermissionList:
    """Share a fine-tuned model or checkpoint (its `ft:` id) with other organizations (`project_ids`):
    they may chat with it and continue training from it. Needs an admin key of the owning organization."""
    rows = service.create(session, settings, principal, fine_tuned_model_checkpoint, body.project_ids)
    session.commit()
    data = [PermissionObject.of(p) for p in rows]
    return PermissionList.page(data, len(data))


@router.get("/{fine_tuned_model_checkpoint:path}/permissions", response_model=PermissionList)
def list_permissions(
    fine_tuned_model_checkpoint: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    project_id: Annotated[str | None, Query(description="Only the permission for this organization.")] = None,
    after: Annotated[str | None, Query(description="The last permission id of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    order: Literal["ascending", "descending"] = "descending",
) -> PermissionList:
    """The organizations a fine-tuned model or checkpoint is shared with (its owner only)."""
    rows = service.list_page(
        session,
        settings,
        principal,
        fine_tuned_model_checkpoint,
        project_id=project_id,
        after=after,
        limit=limit,
        ascending=order == "ascending",
    )
    return PermissionList.page([PermissionObject.of(p) for p in rows], limit)


@router.delete(
    "/{fine_tuned_model_checkpoint:path}/permissions/{permission_id}",
    response_model=PermissionDeleted,
    responses=error_responses(403),
)
def delete_permission(
    fine_tuned_model_checkpoint: str,
    permission_id: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> PermissionDeleted:
    """Stop sharing: the organization loses access at once (its next chat or job create is a 404)."""
    service.delete(session, settings, principal, fine_tuned_model_checkpoint, permission_id)
    session.commit()
    return PermissionDeleted(id=permission_id, deleted=True)

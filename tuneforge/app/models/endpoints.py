from __future__ import annotations

from fastapi import APIRouter

from tuneforge.app.core.schemas import DeletedResponse, error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.models import service
from tuneforge.app.models.schemas import ModelList, ModelObject

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses())


@router.get("", response_model=ModelList)
def list_models(session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> ModelList:
    """Base models under the models root, then this organization's fine-tuned models (newest first)."""
    return ModelList(data=service.list_models(session, settings, principal.organization_id))


@router.get("/{model_id:path}", response_model=ModelObject, responses=error_responses(404))
def retrieve_model(model_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> ModelObject:
    """A base model name, an `ft:` id, or a checkpoint's `fine_tuned_model_checkpoint`."""
    return service.get_model(session, settings, principal.organization_id, model_id)


@router.delete("/{model_id:path}", response_model=DeletedResponse, responses=error_responses(404, 503))
def delete_model(model_id: str, session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> DeletedResponse:
    """Delete a fine-tuned model of this organization: its final adapter and merged exports are removed
    and it can no longer be used; the job (`model_deleted_at`), its metrics and checkpoints stay."""
    service.delete_model(session, settings, principal.organization_id, model_id)
    session.commit()
    return DeletedResponse(id=model_id, object="model", deleted=True)

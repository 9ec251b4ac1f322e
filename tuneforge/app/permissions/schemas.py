"""`checkpoint.permission` objects in OpenAI's shape. OpenAI's `project_id` is an organization id here:
an organization is Tuneforge's unit of tenancy, as a project is OpenAI's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.app.core.schemas import ListResponse
from tuneforge.app.db.models import CheckpointPermission
from tuneforge.app.db.types import unix

MAX_PROJECT_IDS = 100


class PermissionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_ids: list[str] = Field(
        min_length=1,
        max_length=MAX_PROJECT_IDS,
        description="The organization ids (OpenAI: project ids) to share the fine-tuned model or checkpoint with.",
    )


class PermissionObject(BaseModel):
    id: str = Field(description="The permission's id (`cp_...`), for DELETE.")
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    created_at: int
    project_id: str = Field(description="The organization the checkpoint is shared with.")

    @classmethod
    def of(cls, p: CheckpointPermission) -> PermissionObject:
        return cls(id=p.id, created_at=unix(p.created_at) or 0, project_id=p.grantee_id)


class PermissionList(ListResponse[PermissionObject]):
    pass


class PermissionDeleted(BaseModel):
    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    deleted: bool

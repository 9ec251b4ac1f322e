"""OpenAI's alpha graders endpoints (`client.fine_tuning.alpha.graders.validate/run`)."""

from __future__ import annotations

from fastapi import APIRouter

from tuneforge.app.core.schemas import error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.graders import service
from tuneforge.app.graders.schemas import (
    GraderRunRequest,
    GraderRunResponse,
    GraderValidateRequest,
    GraderValidateResponse,
)

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"], responses=error_responses(400))


@router.post("/validate", response_model=GraderValidateResponse)
def validate(body: GraderValidateRequest, settings: SettingsDep, principal: PrincipalDep) -> GraderValidateResponse:
    """Check a grader's shape, templates and formula, and that this server can run it."""
    return GraderValidateResponse(grader=service.validate(body.grader, settings))


@router.post("/run", response_model=GraderRunResponse)
async def run(
    body: GraderRunRequest, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> GraderRunResponse:
    """Grade one sample against one item: the reward, the sub-rewards, errors and timings."""
    return await service.run(session, settings, principal.organization_id, body)

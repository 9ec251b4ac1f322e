from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tuneforge.app.core.schemas import ListResponse, error_responses
from tuneforge.app.deps import PrincipalDep, SessionDep, SettingsDep
from tuneforge.app.sweeps import driver, service
from tuneforge.app.sweeps.request import SweepCreate
from tuneforge.app.sweeps.schemas import SweepObject, SweepTrialObject

router = APIRouter(prefix="/v1/fine_tuning/sweeps", tags=["sweeps"], responses=error_responses(404))
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("", response_model=SweepObject, responses=error_responses(429))
def create_sweep(body: SweepCreate, session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> SweepObject:
    """Create a sweep and start its first trials (ordinary jobs with `metadata.sweep_id`)."""
    sweep = service.create(session, settings, principal, body)
    session.commit()
    driver.advance(session, settings, sweep.id)
    return SweepObject.of(*service.view(session, service.get(session, principal, sweep.id)))


@router.get("", response_model=ListResponse[SweepObject], responses=error_responses(403))
def list_sweeps(
    session: SessionDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: Limit = 20,
    all_organizations: Annotated[
        bool, Query(description="Admin keys only: list every organization's sweeps (an ops view).")
    ] = False,
) -> ListResponse[SweepObject]:
    """Newest first: the key's organization's sweeps, as for jobs."""
    rows = service.list_sweeps(session, principal, after=after, limit=limit, all_organizations=all_organizations)
    return ListResponse[SweepObject].page([SweepObject.of(*service.view(session, s)) for s in rows], limit)


@router.get("/{sweep_id}", response_model=SweepObject)
def retrieve_sweep(sweep_id: str, session: SessionDep, principal: PrincipalDep) -> SweepObject:
    return SweepObject.of(*service.view(session, service.get(session, principal, sweep_id)))


@router.get("/{sweep_id}/trials", response_model=ListResponse[SweepTrialObject])
def list_trials(sweep_id: str, session: SessionDep, principal: PrincipalDep) -> ListResponse[SweepTrialObject]:
    """Every trial, by number (a sweep has at most TUNEFORGE_MAX_SWEEP_TRIALS)."""
    _, views, _ = service.view(session, service.get(session, principal, sweep_id))
    data = [SweepTrialObject.of(v) for v in views]
    return ListResponse[SweepTrialObject].page(data, max(1, len(data)), key="job_id")


@router.post("/{sweep_id}/cancel", response_model=SweepObject, responses=error_responses(409))
def cancel_sweep(sweep_id: str, session: SessionDep, principal: PrincipalDep) -> SweepObject:
    sweep = service.cancel(session, principal, sweep_id)
    session.commit()
    return SweepObject.of(*service.view(session, sweep))

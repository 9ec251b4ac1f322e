"""The sweep driver: starts trials as others finish, prunes, and finishes the sweep.

`advance()` is one round for one sweep. The POST calls it to start the first trials at once; a
`SweepDriver` thread in every API process (beside the reconciler) calls it for every running sweep
every `TUNEFORGE_SWEEP_SECONDS`. Everything it decides is re-read from the database and every change
is a conditional update (trial n is created by whoever moves `trials_created` from n to n+1, a prune
only applies to a job still `running`, the sweep finishes once), so several API processes, restarts
of any of them, and restarts of workers leave one consistent sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from tuneforge.app.auth.service import Principal
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import APIError, TooManyRequests
from tuneforge.app.core.loops import Loop, LoopName
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Sweep
from tuneforge.app.jobs import dispatch
from tuneforge.app.jobs import lifecycle as jobs_lifecycle
from tuneforge.app.jobs import repository as jobs_repo
from tuneforge.app.jobs import service as jobs_service
from tuneforge.app.jobs.request import JobCreate
from tuneforge.app.sweeps import repository, space, study, trials
from tuneforge.app.sweeps import service as sweeps_service
from tuneforge.contract.status import LIVE, JobStatus, SweepStatus

log = logging.getLogger("tuneforge.sweeps")


def advance(session: Session, settings: Settings, sweep_id: str, publish: Callable[[str], None] | None = None) -> None:
    sweep = repository.get(session, None, sweep_id)
    if sweep is None or sweep.status != SweepStatus.RUNNING:
        return
    views = trials.load(session, sweep)
    _prune(session, sweep, views)
    live = [v for v in views if v.job.status in LIVE]
    if sweep.trials_created >= sweep.max_trials:
        if not live:
            _finish(session, sweep, views)
        return
    while len(live) < sweep.max_parallel and sweep.trials_created < sweep.max_trials:
        job_id = _create_trial(session, settings, sweep, views)
        if job_id is None:
            return
        dispatch.publish_and_mark(session, job_id, publish)
        session.commit()
        session.refresh(sweep)
        views = trials.load(session, sweep)
        live = [v for v in views if v.job.status in LIVE]


def _prune(session: Session, sweep: Sweep, views: list[trials.TrialView]) -> None:
    if sweep.pruner.get("type", "none") == "none":
        return
    records = [v.record() for v in views]
    verdicts = study.to_prune(sweep.id, sweep.direction, sweep.search_space, sweep.pruner, records)
    for v in views:
        if v.job.status != JobStatus.RUNNING or v.trial.number not in verdicts or not v.intermediate:
            continue
        step = max(v.intermediate)
        if jobs_lifecycle.prune(
            session,
            v.job.id,
            message=f"Pruned by sweep {sweep.id} ({sweep.pruner['type']} pruner): {sweep.objective_metric}="
            f"{v.intermediate[step]:.4f} at step {step}; stopping at the next step",
            data={"sweep_id": sweep.id, "step": step, sweep.objective_metric: v.intermediate[step]},
        ):
            log.info("sweep %s: pruned trial %s (%s)", sweep.id, v.trial.number, v.job.id)
    session.commit()


def _create_trial(session: Session, settings: Settings, sweep: Sweep, views: list[trials.TrialView]) -> str | None:
    """Create trial n's job (committed, not yet published). None if another process took n, the
    organization's queue is full (a later round retries), or the trial cannot be created."""
    number = sweep.trials_created
    params = study.propose(
        sweep.id,
        sweep.strategy,
        sweep.direction,
        sweep.search_space,
        sweep.seed,
        sweep.max_trials,
        number,
        [v.record() for v in views],
    )
    if not repository.take_trial_number(session, sweep.id, number):
        session.rollback()
        return None
    body = space.apply(sweep.job_body, params)
    body["metadata"] = {**(body.get("metadata") or {}), "sweep_id": sweep.id, "sweep_trial": str(number)}
    principal = Principal(organization_id=sweep.organization_id, key_id="sweep-driver", is_admin=False)
    try:
        job, _ = jobs_service.create(session, settings, principal, JobCreate.model_validate(body), None)
    except TooManyRequests:
        session.rollback()
        log.info("sweep %s: the organization's queue is full; trial %s waits", sweep.id, number)
        return None
    except (APIError, ValueError) as exc:  # a file deleted since the POST, a model removed...
        session.rollback()
        message = f"Trial {number} could not be created: {getattr(exc, 'message', str(exc))}"
        error = {"code": "trial_invalid", "message": message, "param": getattr(exc, "param", None)}
        sweeps_service.finish(session, sweep, SweepStatus.FAILED, error=error)
        session.commit()
        return None
    repository.add_trial(session, sweep.id, number, job.id, params)
    jobs_repo.add_event(session, job.id, f"Trial {number} of sweep {sweep.id}", data={"params": params})
    session.commit()
    return job.id


def _finish(session: Session, sweep: Sweep, views: list[trials.TrialView]) -> None:
    best = trials.best(sweep, views)
    if best is not None:
        sweeps_service.finish(session, sweep, SweepStatus.SUCCEEDED, best_job_id=best.job.id)
    else:
        message = "No trial finished with a value for the objective."
        error = {"code": "no_trials_succeeded", "message": message}
        sweeps_service.finish(session, sweep, SweepStatus.FAILED, error=error)
    session.commit()


class SweepDriver(Loop):
    def __init__(self, settings: Settings, publish: Callable[[str], None]) -> None:
        super().__init__(LoopName.SWEEPS, settings.sweep_seconds, log=log)
        self.settings = settings
        self.publish = publish

    def round(self) -> None:
        with session_scope() as session:
            ids = repository.running_ids(session)
        for sweep_id in ids:
            with session_scope() as session:
                advance(session, self.settings, sweep_id, self.publish)

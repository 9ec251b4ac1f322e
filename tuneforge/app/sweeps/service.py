"""Sweep use cases. Services flush; the route commits (the driver commits per trial it creates)."""

from __future__ import annotations

import random
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from tuneforge.app.auth.service import Principal
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import (
    APIError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    describe_validation,
)
from tuneforge.app.core.ids import new_id
from tuneforge.app.db.models import File, Sweep
from tuneforge.app.files import repository as files_repo
from tuneforge.app.jobs import lifecycle as jobs_lifecycle
from tuneforge.app.jobs.admission import (
    check_caps,
    check_data_against_spec,
    check_gpu_memory,
    check_judges,
    check_queue_room,
)
from tuneforge.app.jobs.model_path import model_config, resolve_model
from tuneforge.app.jobs.request import JobCreate
from tuneforge.app.sweeps import repository, space, trials
from tuneforge.app.sweeps.request import ALIASES, TASK_METRICS, SweepCreate
from tuneforge.app.webhooks import service as webhooks
from tuneforge.contract.spec import SpecError
from tuneforge.contract.status import LIVE, SweepStatus


def get(session: Session, principal: Principal, sweep_id: str, *, write: bool = False) -> Sweep:
    """Another organization's sweep is a 404, exactly like one that does not exist."""
    sweep = repository.get(session, principal.scope(write=write), sweep_id)
    if sweep is None:
        raise NotFound(f"No such sweep: {sweep_id}", param="sweep_id", code="sweep_not_found")
    return sweep


def _searched(param: str | None, params: dict[str, Any]) -> str | None:
    """The searched path an error is about, if it is about one."""
    if not param:
        return None
    for path in params:
        if param == path or param.startswith(path + ".") or path.startswith(param + "."):
            return path
    return None


def _trial_error(message: str, param: str | None, params: dict[str, Any], code: str | None) -> InvalidRequest:
    path = _searched(param, params)
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    if path is not None:
        return InvalidRequest(
            f"search_space.{path}: a trial with {shown} is invalid: {message}",
            param=f"search_space.{path}",
            code=code or "invalid_spec",
        )
    return InvalidRequest(f"{message} (in a trial with {shown})" if params else message, param=param, code=code)


class _Checker:
    """Validates trial bodies exactly as a job POST would, reading each file and the model once."""

    def __init__(self, session: Session, settings: Settings, principal: Principal) -> None:
        self.session, self.settings, self.principal = session, settings, principal
        self.files: dict[str, File] = {}
        self.configs: dict[str, dict[str, Any] | None] = {}

    def _file(self, file_id: str, param: str) -> File:
        if file_id not in self.files:
            f = files_repo.get(self.session, self.principal.organization_id, file_id)
            if f is None:
                raise InvalidRequest(f"File {file_id} does not exist.", param=param, code="file_not_found")
            if f.purpose != "fine-tune":
                raise InvalidRequest(f"File {file_id} has purpose {f.purpose!r}, not 'fine-tune'.", param=param)
            self.files[file_id] = f
        return self.files[file_id]

    def check(self, body: dict[str, Any], params: dict[str, Any]) -> JobCreate:
        try:
            job = JobCreate.model_validate(space.apply(body, params))
            spec = job.resolve()
            if job.model not in self.configs:
                model_dir = resolve_model(self.settings, job.model)
                self.configs[job.model] = model_config(model_dir) if model_dir is not None else None
            check_caps(spec, self.settings)
            check_judges(self.session, self.principal.organization_id, spec)
            config = self.configs[job.model]
            if config is not None:
                check_gpu_memory(spec, config, self.settings)
            check_data_against_spec(spec, self._file(job.training_file, "training_file"), "training_file")
            if job.validation_file:
                check_data_against_spec(spec, self._file(job.validation_file, "validation_file"), "validation_file")
        except SpecError as exc:
            raise _trial_error(exc.message, exc.param, params, "invalid_spec") from exc
        except ValidationError as exc:
            message, param = describe_validation(list(exc.errors()))
            raise _trial_error(message, param, params, "invalid_spec") from exc
        except APIError as exc:
            raise _trial_error(exc.message, exc.param, params, exc.code) from exc
        return job


def _objective(body: SweepCreate, has_validation: bool) -> tuple[str, str]:
    metric = ALIASES.get(body.objective.metric, body.objective.metric)
    reported = TASK_METRICS[body.task]
    if metric not in reported:
        raise InvalidRequest(
            f"objective.metric {body.objective.metric!r} is never reported by task {body.task!r}; "
            f"it reports {', '.join(reported)}.",
            param="objective.metric",
            code="invalid_objective",
        )
    if not has_validation:
        raise InvalidRequest(
            "The objective is measured on held-out data, but this sweep has none: set data.validation_split "
            "above 0 or give a validation_file.",
            param="objective.metric",
            code="invalid_objective",
        )
    return metric, body.objective.direction or reported[metric]


def create(session: Session, settings: Settings, principal: Principal, body: SweepCreate) -> Sweep:
    """Validate the search and every trial's spec; store the sweep as `running` with no trials yet."""
    check_queue_room(session, settings, principal.organization_id)  # its trials are jobs
    cap = settings.max_sweep_trials
    try:
        distributions = space.parse_space(body.search_space)
        if body.strategy == "grid":
            size = space.grid_size(distributions)
            if size > cap:
                raise SpecError(
                    "search_space",
                    f"the grid has {size} combinations, over this server's limit of {cap} trials "
                    "(TUNEFORGE_MAX_SWEEP_TRIALS)",
                )
    except SpecError as exc:
        raise InvalidRequest(exc.message, param=exc.param, code="invalid_search_space") from exc
    if body.max_trials is not None and body.max_trials > cap:
        raise InvalidRequest(
            f"max_trials={body.max_trials} is over this server's limit of {cap} (TUNEFORGE_MAX_SWEEP_TRIALS).",
            param="max_trials",
            code="over_limit",
        )
    seed = body.seed if body.seed is not None else random.randint(0, 2**31 - 1)
    job_body = body.job_body() | {"seed": seed}
    checker = _Checker(session, settings, principal)
    base = checker.check(job_body, {})
    resolved = base.resolve()
    metric, direction = _objective(body, bool(base.validation_file) or (resolved.data.validation_split or 0) > 0)
    if body.strategy == "grid":
        combos = list(space.grid(distributions))
        max_trials = min(body.max_trials or len(combos), len(combos))
        to_check = combos[:max_trials]
    else:
        max_trials = body.max_trials or min(10, cap)
        to_check = list(space.extremes(distributions))
    for params in to_check:
        checker.check(job_body, params)

    sweep = Sweep(
        id=new_id("ftsweep"),
        organization_id=principal.organization_id,
        status=SweepStatus.RUNNING,
        job_body=job_body,
        search_space=body.search_space,
        strategy=body.strategy,
        objective_metric=metric,
        direction=direction,
        pruner=body.pruner.model_dump(mode="json"),
        max_trials=max_trials,
        max_parallel=min(body.max_parallel, max_trials),
        seed=seed,
        trials_created=0,
        sweep_metadata=body.metadata,
    )
    session.add(sweep)
    session.flush()
    return sweep


def cancel(session: Session, principal: Principal, sweep_id: str) -> Sweep:
    """Stop the sweep creating trials, and cancel its queued and running ones."""
    sweep = get(session, principal, sweep_id, write=True)
    if sweep.status != SweepStatus.RUNNING:
        raise Conflict(f"Sweep {sweep_id} is already {sweep.status}; it cannot be cancelled.", code="sweep_finished")
    # Finished first: a trial another process is creating now either commits before this update
    # (and is read below) or finds the sweep no longer running.
    finish(session, sweep, SweepStatus.CANCELLED)
    for _trial, job in repository.trials(session, sweep.id):
        if job.status not in LIVE:
            continue
        # At most one applies: a trial no worker holds is cancelled now; a training one is asked to stop.
        if not jobs_lifecycle.cancel(session, job.id, note=f"sweep {sweep.id} cancelled"):
            jobs_lifecycle.request_cancel(session, job.id, note=f"sweep {sweep.id} cancelled")
    session.refresh(sweep)
    return sweep


def finish(
    session: Session,
    sweep: Sweep,
    status: SweepStatus,
    *,
    best_job_id: str | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """End a running sweep (succeeded, failed or cancelled) and queue its `fine_tuning.sweep.completed`
    webhook in the same transaction. Conditional: a sweep ends once, however many processes try."""
    org_id, sweep_id = sweep.organization_id, sweep.id
    if not repository.finish(session, sweep_id, status, best_job_id, error):
        return False
    webhooks.emit_sweep_completed(session, org_id, sweep_id)
    return True


def view(session: Session, sweep: Sweep) -> tuple[Sweep, list[trials.TrialView], trials.TrialView | None]:
    views = trials.load(session, sweep)
    return sweep, views, trials.best(sweep, views)


def list_sweeps(
    session: Session, principal: Principal, *, after: str | None, limit: int, all_organizations: bool
) -> list[Sweep]:
    """Newest first, limit+1 rows: the key's organization's sweeps. As with jobs, an admin key lists
    every organization's only when it asks (`all_organizations=true`); it still reads any sweep by id."""
    if all_organizations and not principal.is_admin:
        raise PermissionDenied(
            "all_organizations=true needs an admin key (tuneforge keys create --admin).",
            param="all_organizations",
            code="admin_required",
        )
    org = None if all_organizations else principal.organization_id
    return repository.list_page(session, org, after=after, limit=limit)

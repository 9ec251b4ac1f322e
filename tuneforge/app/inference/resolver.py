"""Which base model and adapter a chat/completion `model` names, for the calling organization.

Part of issue 11 (B). Issue 11 (A) adds a resolver for `/v1/models` in tuneforge/app/models/service.py; the
two answer the same question and should become one when both are merged.

`model` is one of:
- a base model name under the models root (`tiny-llama`), checked by tuneforge/app/jobs/model_path.py;
- a succeeded job's `fine_tuned_model` (`ft:<base>:<org>:<suffix>:<job id>`): its final adapter;
- a checkpoint's `fine_tuned_model_checkpoint` (`<ft id>:ckpt-step-<N>`): that checkpoint's adapter.

Another organization's `ft:` id answers exactly as a missing one does (404), so ids cannot be probed,
unless that exact id was shared with the caller's organization (a checkpoint permission).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import InvalidRequest, NotFound
from tuneforge.app.db.models import Job
from tuneforge.app.jobs import repository
from tuneforge.app.jobs.model_path import resolve_model
from tuneforge.app.permissions import repository as permissions
from tuneforge.contract.spec import SpecError
from tuneforge.contract.status import JobStatus

CHECKPOINT_SUFFIX = re.compile(r"^(?P<base>ft:.+):ckpt-step-(?P<step>\d{1,9})$")


@dataclass(frozen=True)
class Target:
    """What an inference worker loads: a base model name (resolved again, with the same rules, in
    the worker) and optionally an adapter directory that a worker recorded under the artifacts dir."""

    model: str
    base: str
    adapter: str | None


def _not_found(model: str) -> NotFound:
    message = f"The model {model!r} does not exist or you do not have access to it."
    return NotFound(message, param="model", code="model_not_found")


def _ft_job(session: Session, org_id: str, ft_id: str, model: str) -> Job:
    job_id = ft_id.rsplit(":", 1)[-1]
    job = repository.get(session, org_id, job_id) if job_id else None
    if job is None and job_id and permissions.granted(session, org_id, model):
        job = repository.get(session, None, job_id)
    if job is None:
        raise _not_found(model)
    expected = job.fine_tuned_model or f"ft:{job.model}:{job.organization_id}:{job.suffix or ''}:{job.id}"
    if expected != ft_id:
        raise _not_found(model)
    task = (job.spec or {}).get("task", "causal_lm")
    if task != "causal_lm":
        raise InvalidRequest(
            f"The model {model!r} is a {task} fine-tune; chat and completions serve causal_lm models only.",
            param="model",
            code="model_not_supported",
        )
    return job


def resolve(session: Session, settings: Settings, org_id: str, model: str) -> Target:
    if model.startswith("ft:"):
        match = CHECKPOINT_SUFFIX.match(model)
        if match:
            job = _ft_job(session, org_id, match["base"], model)
            ckpt = repository.checkpoint_at(session, job.id, int(match["step"]))
            if ckpt is None:
                raise _not_found(model)
            return Target(model=model, base=job.model, adapter=str(Path(ckpt.path) / "adapter"))
        job = _ft_job(session, org_id, model, model)
        if job.status != JobStatus.SUCCEEDED or not job.adapter_path:
            raise _not_found(model)
        return Target(model=model, base=job.model, adapter=job.adapter_path)
    try:
        resolve_model(settings, model)
    except SpecError as exc:
        raise NotFound(exc.message, param="model", code="model_not_found") from exc
    except OSError as exc:  # a name the filesystem cannot even look up (a component over 255 bytes)
        raise _not_found(model) from exc
    return Target(model=model, base=model, adapter=None)

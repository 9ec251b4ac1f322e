"""Continued training: a new job that starts from an earlier job's adapter or checkpoint
(`from_checkpoint` in the create body, like Together's).

`from_checkpoint` is a fine-tuned model id (`ft:<model>:<org>:<suffix>:<job>`), a checkpoint's
`fine_tuned_model_checkpoint` (`...:ckpt-step-<n>`), or a checkpoint id (`ftckpt-...`). It must belong
to the same organization or have been shared with it (a checkpoint permission on that `ft:` id;
another organization's is otherwise a 404, as if it did not exist), and have been
trained on the same base model, task and LoRA shape (`r`, `target_modules`), or it is a 400.
The API checks this at POST; the worker resolves it again to find the adapter's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge.app.core.errors import InvalidRequest, NotFound
from tuneforge.app.db.models import Checkpoint, Job
from tuneforge.app.jobs import repository
from tuneforge.app.permissions import repository as permissions
from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import JobStatus

PARAM = "from_checkpoint"
_STEP = ":ckpt-step-"


@dataclass(frozen=True)
class Source:
    job: Job
    adapter_dir: Path
    step: int | None


def _missing(ref: str) -> NotFound:
    return NotFound(f"No such fine-tuned model or checkpoint: {ref}", param=PARAM, code="checkpoint_not_found")


def find(session: Session, org_id: str, ref: str) -> Source:
    """The adapter a reference names, within one organization. Raises NotFound naming the field."""
    if ref.startswith("ftckpt-"):
        found = repository.checkpoint_by_id(session, org_id, ref)
        if found is None:
            # Shared checkpoints are granted by their `ft:` id: look it up unscoped, then check the grant.
            found = permissions.checkpoint_with_job(session, ref)
            if found is None or not permissions.granted(session, org_id, _checkpoint_model_id(*found)):
                raise _missing(ref)
        ckpt, job = found
        return Source(job, Path(ckpt.path) / "adapter", ckpt.step_number)
    if not ref.startswith("ft:"):
        raise InvalidRequest(
            f"from_checkpoint must be an ft: model id or a checkpoint id (ftckpt-...), not {ref!r}.", param=PARAM
        )
    base, step = ref, None
    if _STEP in ref:
        base, _, raw = ref.rpartition(_STEP)
        if not raw.isdigit():
            raise _missing(ref)
        step = int(raw)
    owner = repository.get(session, org_id, base.rpartition(":")[2])
    if owner is None and permissions.granted(session, org_id, ref):
        owner = repository.get(session, None, base.rpartition(":")[2])
    if owner is None or _ft_id(owner) != base:
        raise _missing(ref)
    if step is not None:
        at_step = repository.checkpoint_at(session, owner.id, step)
        if at_step is None:
            raise _missing(ref)
        return Source(owner, Path(at_step.path) / "adapter", step)
    job = owner
    if job.status != JobStatus.SUCCEEDED or job.fine_tuned_model != ref or not job.adapter_path:
        raise _missing(ref)
    return Source(job, Path(job.adapter_path), None)


def _ft_id(job: Job) -> str:
    return job.fine_tuned_model or f"ft:{job.model}:{job.organization_id}:{job.suffix or ''}:{job.id}"


def _checkpoint_model_id(ckpt: Checkpoint, job: Job) -> str:
    return f"{_ft_id(job)}{_STEP}{ckpt.step_number}"


def check_compatible(source: Source, model: str, spec: JobSpec, ref: str) -> None:
    """The new job must be able to load the adapter as it is."""
    prior = JobSpec.model_validate(source.job.spec)
    problems = []
    if source.job.model != model:
        problems.append(f"it was trained on base model {source.job.model!r}, not {model!r}")
    if prior.task != spec.task:
        problems.append(f"its task is {prior.task}, not {spec.task}")
    if prior.lora.r != spec.lora.r:
        problems.append(f"its lora.r is {prior.lora.r}, not {spec.lora.r}")
    if prior.lora.target_modules != spec.lora.target_modules:
        problems.append(f"its lora.target_modules are {prior.lora.target_modules}, not {spec.lora.target_modules}")
    if problems:
        raise InvalidRequest(f"from_checkpoint {ref} is not compatible: {'; '.join(problems)}.", param=PARAM)

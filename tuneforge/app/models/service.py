"""Models: the base models under the models root, an organization's fine-tuned models, and
`resolve_model_id()`, which turns any model id a client may send into the directories to load.

Ids:
- a base model: its path under the models root (`smollm2-135m-instruct`, `org/model`);
- a fine-tuned model: the job's `fine_tuned_model`, `ft:<base>:<org>:<suffix>:<job id>`;
- a checkpoint: its `fine_tuned_model_checkpoint`, `ft:...:<job id>:ckpt-step-<N>`.

An `ft:` id resolves for the organization that trained it, and for the organizations it was shared
with (a checkpoint permission on that exact id: tuneforge/app/permissions); for anyone else it is a
404, exactly like an id that does not exist. Only the owner may delete a fine-tuned model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import InvalidRequest, NotFound, Unavailable
from tuneforge.app.core.storage import get_store
from tuneforge.app.db.models import Job
from tuneforge.app.db.types import unix, utcnow
from tuneforge.app.jobs import repository as jobs_repository
from tuneforge.app.jobs.model_path import resolve_model_dir
from tuneforge.app.models import repository
from tuneforge.app.models.info import ModelInfo, describe
from tuneforge.app.models.schemas import ModelObject
from tuneforge.app.permissions import repository as permissions
from tuneforge.contract.spec import SpecError
from tuneforge.contract.status import JobStatus
from tuneforge.storage import StoreError

BASE_OWNER = "system"
MAX_DEPTH = 2  # `name` or `org/name`, as model names are
MAX_ID_CHARS = 512  # the longest `model` a job may name (its column's width)


@dataclass(frozen=True)
class BaseModelEntry:
    name: str
    path: Path
    created: int
    info: ModelInfo


@dataclass(frozen=True)
class ResolvedModel:
    """What an inference worker loads for a model id: a base model folder, and an adapter or None."""

    model_id: str
    base_dir: Path
    adapter_dir: Path | None
    job: Job | None = None
    step: int | None = None  # the checkpoint's step, for a checkpoint id


def scan_base_models(models_root: Path) -> Iterator[BaseModelEntry]:
    """Every folder under the root (one or two levels deep) that passes the model-path rules."""
    root = models_root.resolve()
    if not root.is_dir():
        return
    for path in _candidates(root, depth=1):
        name = path.relative_to(root).as_posix()
        try:
            resolved = resolve_model_dir(root, name)
        except SpecError:
            continue
        yield BaseModelEntry(name=name, path=resolved, created=int(resolved.stat().st_mtime), info=describe(resolved))


def _candidates(folder: Path, depth: int) -> Iterator[Path]:
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue  # `.import-*` temporaries, hidden folders
        if (child / "config.json").is_file():
            yield child
        elif depth < MAX_DEPTH:
            yield from _candidates(child, depth + 1)


def list_models(session: Session, settings: Settings, org_id: str) -> list[ModelObject]:
    entries = list(scan_base_models(settings.models_dir))
    infos = {e.name: e.info for e in entries}
    tuned = [_tuned_object(job, infos.get(job.model)) for job in repository.fine_tuned_jobs(session, org_id)]
    shared = []
    for model_id, job in permissions.shared_with(session, org_id, repository.MAX_LISTED):
        _, step = _parse_ft(model_id)
        obj = _tuned_object(job, infos.get(job.model))
        shared.append(obj if step is None else obj.model_copy(update={"id": model_id, "step_number": step}))
    return [_base_object(e) for e in entries] + tuned + shared


def get_model(session: Session, settings: Settings, org_id: str, model_id: str) -> ModelObject:
    if not model_id.startswith("ft:"):
        path = _base_dir(settings, model_id)
        return _base_object(
            BaseModelEntry(name=model_id, path=path, created=int(path.stat().st_mtime), info=describe(path))
        )
    resolved = resolve_model_id(session, settings, org_id, model_id)
    assert resolved.job is not None
    obj = _tuned_object(resolved.job, describe(resolved.base_dir))
    if resolved.step is not None:
        obj = obj.model_copy(update={"id": model_id, "step_number": resolved.step})
    return obj


def resolve_model_id(
    session: Session, settings: Settings, org_id: str, model_id: str, *, owner_only: bool = False
) -> ResolvedModel:
    """Resolve a model id sent by organization `org_id` to (base model dir, adapter dir | None).

    - A base model name resolves inside the models root with the same rules as a training job
      (tuneforge/app/jobs/model_path.py: no escaping the root, safetensors only, no `auto_map`); adapter None.
    - A fine-tuned id (`ft:...:<job id>`) resolves to its job's base model and its recorded final
      adapter; the job must be this organization's and `succeeded`.
    - A checkpoint id (`ft:...:<job id>:ckpt-step-<N>`) resolves to that checkpoint's adapter; the job
      may still be running.
    An `ft:` id of another organization resolves only where that exact id was shared with `org_id`
    (and never with `owner_only`).
    Anything else, including another organization's id (even for an admin key), raises NotFound (404)
    with `param="model"` and `code="model_not_found"`. The directories come from what the worker
    recorded, never from a path in the id."""
    if not model_id.startswith("ft:"):
        return ResolvedModel(model_id=model_id, base_dir=_base_dir(settings, model_id), adapter_dir=None)
    job_id, step = _parse_ft(model_id) if len(model_id) <= 2 * MAX_ID_CHARS else (None, None)
    job = _visible_job(session, org_id, job_id, model_id, owner_only) if job_id else None
    if job is None or model_id.removesuffix(f":ckpt-step-{step}") != _ft_id(job):
        raise _not_found(model_id)
    base_dir = job_base_dir(settings, job)
    if step is None:
        if job.model_deleted_at is not None:
            raise _not_found(model_id, "it was deleted")
        if job.status != JobStatus.SUCCEEDED or job.adapter_path is None:
            raise _not_found(model_id, f"the fine-tuning job {job.id} is {job.status}; it has no final adapter yet")
        return ResolvedModel(model_id=model_id, base_dir=base_dir, adapter_dir=Path(job.adapter_path), job=job)
    ckpt = jobs_repository.checkpoint_at(session, job.id, step)
    if ckpt is None:
        raise _not_found(model_id)
    return ResolvedModel(
        model_id=model_id, base_dir=base_dir, adapter_dir=Path(ckpt.path) / "adapter", job=job, step=step
    )


def _visible_job(session: Session, org_id: str, job_id: str, model_id: str, owner_only: bool) -> Job | None:
    """The job behind an `ft:` id: the organization's own, or another's shared with it."""
    job = repository.job_in_org(session, org_id, job_id)
    if job is None and not owner_only and permissions.granted(session, org_id, model_id):
        job = repository.job_by_id(session, job_id)
    return job


def delete_model(session: Session, settings: Settings, org_id: str, model_id: str) -> None:
    """`DELETE /v1/models/{id}` of a fine-tuned model: its final adapter leaves the store, and its
    exports (merged, GGUF) this host's disk, its grants go, and the job says so (`model_deleted_at` and an
    event); the job, its metrics and checkpoints stay. Only the owning organization may (anyone
    else: 404). A base model or a checkpoint id is refused with a 400."""
    if not model_id.startswith("ft:"):
        _base_dir(settings, model_id)  # 404 for a name that is not a model
        raise InvalidRequest(
            f"{model_id!r} is a base model; base models are managed under the models root "
            "(`tuneforge models`), not deleted through the API.",
            param="model",
            code="model_not_deletable",
        )
    resolved = resolve_model_id(session, settings, org_id, model_id, owner_only=True)
    job = resolved.job
    assert job is not None  # an ft: id always resolves to its job
    if resolved.step is not None:
        raise InvalidRequest(
            f"{model_id!r} is a checkpoint of job {job.id}; checkpoints stay with their job. "
            f"Delete the fine-tuned model {_ft_id(job)!r} instead.",
            param="model",
            code="model_not_deletable",
        )
    adapter_key = job.adapter_path
    job.adapter_path = None
    job.adapter_manifest = None
    job.model_deleted_at = utcnow()
    permissions.delete_for_model(session, model_id)
    jobs_repository.add_event(
        session,
        job.id,
        f"Fine-tuned model {model_id} deleted: its adapter and merged exports were removed; "
        "the job, its metrics and its checkpoints are kept",
        data={"fine_tuned_model": model_id, "deleted": True},
    )
    session.flush()
    if adapter_key:
        try:
            get_store(settings).delete_prefix(adapter_key)
        except StoreError as exc:  # nothing is committed: the client may retry
            raise Unavailable(
                "The artifact store is unreachable; the model was not deleted. Try again shortly.",
                code="store_unavailable",
            ) from exc
        # Copies this host made: a remote store's adapter downloaded for a merge or a chat.
        _remove_local(settings.cache_dir / "folders" / adapter_key, settings.cache_dir)
    # The exports built from the final adapter (tuneforge/app/jobs/merged.py and gguf.py); a
    # checkpoint's (`step-N`) stay with the checkpoint.
    for export in ("merged", "gguf"):
        _remove_local(settings.artifacts_dir / job.id / export / "final", settings.artifacts_dir)


def _remove_local(folder: Path, root: Path) -> None:
    """Remove a folder this process wrote under `root` (never anything outside it)."""
    with contextlib.suppress(OSError, ValueError):
        resolved = folder.resolve()
        if root.resolve() in resolved.parents and resolved.is_dir():
            shutil.rmtree(resolved, ignore_errors=True)


def _parse_ft(model_id: str) -> tuple[str | None, int | None]:
    parts = model_id.split(":")
    step: int | None = None
    if len(parts) >= 2 and parts[-1].startswith("ckpt-step-"):
        digits = parts[-1].removeprefix("ckpt-step-")
        if not digits.isdigit() or len(digits) > 9:
            return None, None
        step = int(digits)
        parts = parts[:-1]
    if len(parts) < 5:
        return None, None
    return parts[-1] or None, step


def _ft_id(job: Job) -> str:
    return job.fine_tuned_model or f"ft:{job.model}:{job.organization_id}:{job.suffix or ''}:{job.id}"


def _base_dir(settings: Settings, name: str) -> Path:
    if len(name) > MAX_ID_CHARS:
        raise _not_found(name[:64] + "...")
    try:
        return resolve_model_dir(settings.models_dir, name, allow_pickle=settings.allow_pickle_weights)
    except SpecError as exc:
        raise _not_found(name, exc.message) from exc
    except OSError as exc:  # e.g. a path component over the filesystem's name limit
        raise _not_found(name[:64] + "...") from exc


def job_base_dir(settings: Settings, job: Job) -> Path:
    hub = settings.data_dir / "hub" / job.model
    if not (settings.models_dir / job.model).exists() and (hub / "config.json").is_file():
        return resolve_model_dir(settings.data_dir / "hub", job.model)
    return _base_dir(settings, job.model)


def _not_found(model_id: str, why: str | None = None) -> NotFound:
    return NotFound(
        f"The model {model_id!r} does not exist or you do not have access to it" + (f": {why}" if why else "."),
        param="model",
        code="model_not_found",
    )


def _base_object(entry: BaseModelEntry) -> ModelObject:
    info = entry.info
    return ModelObject(
        id=entry.name,
        created=entry.created,
        owned_by=BASE_OWNER,
        kind="base",
        architecture=info.architecture,
        parameters=info.parameters,
        context_length=info.context_length,
        chat_template=info.chat_template,
    )


def _tuned_object(job: Job, base: ModelInfo | None) -> ModelObject:
    """A fine-tuned model answers with its base's architecture, context and chat template (inference
    renders chats with the base's tokenizer); `parameters` stays the base's own field, unset here."""
    finished: dt.datetime | None = job.finished_at or job.created_at
    return ModelObject(
        id=_ft_id(job),
        created=unix(finished) or 0,
        owned_by=job.organization_id,
        kind="fine_tuned",
        architecture=base.architecture if base else None,
        context_length=base.context_length if base else None,
        chat_template=base.chat_template if base else False,
        base_model=job.model,
        fine_tuning_job_id=job.id,
    )

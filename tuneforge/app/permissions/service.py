"""Checkpoint permissions (OpenAI's `/v1/fine_tuning/checkpoints/{checkpoint}/permissions`): the
organization that trained a fine-tuned model or checkpoint shares it, by its exact `ft:` id, with
other organizations, which may then chat with it and continue training from it (`from_checkpoint`).

Only the owning organization sees a model's permissions; creating and deleting them needs one of its
admin keys (as OpenAI's admin API keys). Anyone else, a grantee included, gets the 404 of a model
that does not exist.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuneforge.app.auth.service import Principal
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import InvalidRequest, NotFound, PermissionDenied
from tuneforge.app.core.ids import new_id
from tuneforge.app.db.models import CheckpointPermission
from tuneforge.app.models import service as models
from tuneforge.app.permissions import repository

PARAM = "fine_tuned_model_checkpoint"


def _owned(session: Session, settings: Settings, principal: Principal, checkpoint: str) -> str:
    """The job id behind `checkpoint`, if it is a fine-tuned model or checkpoint this organization
    trained (its final model not deleted); else a 404 naming the path parameter."""
    missing = NotFound(
        f"The fine-tuned model checkpoint {checkpoint[:600]!r} does not exist or you do not have access to it.",
        param=PARAM,
        code="model_not_found",
    )
    if not checkpoint.startswith("ft:"):
        raise missing
    try:
        resolved = models.resolve_model_id(session, settings, principal.organization_id, checkpoint, owner_only=True)
    except NotFound as exc:
        raise missing from exc
    assert resolved.job is not None  # an ft: id resolves to its job
    return resolved.job.id


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied(
            "Sharing a fine-tuned model checkpoint, or revoking a share, needs an admin key of the organization "
            "that trained it.",
            code="admin_required",
        )


def create(
    session: Session, settings: Settings, principal: Principal, checkpoint: str, project_ids: list[str]
) -> list[CheckpointPermission]:
    """One permission per organization, in the order given; one that exists already is returned as it is."""
    job_id = _owned(session, settings, principal, checkpoint)
    _admin(principal)
    wanted = list(dict.fromkeys(project_ids))
    known = repository.known_organizations(session, wanted)
    for i, org in enumerate(project_ids):
        if org == principal.organization_id:
            raise InvalidRequest(
                "A checkpoint is always available to the organization that trained it; name other organizations.",
                param=f"project_ids.{i}",
            )
        if org not in known:
            raise InvalidRequest(f"No organization has the id {org[:100]!r}.", param=f"project_ids.{i}")
    have = repository.existing(session, checkpoint, wanted)
    out = []
    for org in wanted:
        if org in have:
            out.append(have[org])
            continue
        permission = CheckpointPermission(
            id=new_id("cp"),
            model_id=checkpoint,
            job_id=job_id,
            organization_id=principal.organization_id,
            grantee_id=org,
        )
        try:
            with session.begin_nested():  # a concurrent create of the same grant wins; return it
                session.add(permission)
        except IntegrityError:
            permission = repository.existing(session, checkpoint, [org])[org]
        out.append(permission)
    return out


def list_page(
    session: Session,
    settings: Settings,
    principal: Principal,
    checkpoint: str,
    *,
    project_id: str | None,
    after: str | None,
    limit: int,
    ascending: bool,
) -> list[CheckpointPermission]:
    _owned(session, settings, principal, checkpoint)
    return repository.list_page(
        session, checkpoint, grantee_id=project_id, after=after, limit=limit, ascending=ascending
    )


def delete(session: Session, settings: Settings, principal: Principal, checkpoint: str, permission_id: str) -> None:
    _owned(session, settings, principal, checkpoint)
    _admin(principal)
    permission = repository.get(session, checkpoint, permission_id)
    if permission is None:
        raise NotFound(f"No such permission on this checkpoint: {permission_id[:100]}", param="permission_id")
    session.delete(permission)
    session.flush()

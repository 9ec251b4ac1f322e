"""Checkpoint permissions and model delete through the official SDK against `tuneforge api` (a real
uvicorn on PostgreSQL), on job rows written as a worker records them: who may share, list and revoke,
what a grantee and everyone else see, and what deleting a fine-tuned model removes and keeps.
(tests/integration/test_sharing.py trains, chats and continues from a shared checkpoint for real.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest
from openai import OpenAI
from sqlalchemy import update

from tests.helpers import insert_job, make_key, make_spec, org_id_of
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import NotFound
from tuneforge.app.core.ids import new_id
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Checkpoint, Job
from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs import continuation


@dataclass(frozen=True)
class Model:
    job_id: str
    ft: str
    ckpt: str  # the step-2 checkpoint's fine_tuned_model_checkpoint


def trained_row(settings: Settings, model: str) -> Model:
    """A succeeded job of acme's with a final adapter and a step-2 checkpoint on the local store, and a
    merged export, as the worker and a download leave them."""
    org = org_id_of("acme")
    job_id = insert_job(org, "succeeded", model=model, spec=make_spec().model_dump(mode="json"))
    ft = f"ft:{model}:{org}::{job_id}"
    root = settings.artifacts_dir / job_id
    folders = ("adapter", "checkpoints/step-00000002/adapter", "merged/final", "gguf/final/f16", "gguf/step-2/f16")
    for folder in (root / f for f in folders):
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
    with session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                fine_tuned_model=ft,
                adapter_path=f"artifacts/{job_id}/adapter",
                adapter_manifest={"adapter_config.json": "0" * 64},
                finished_at=utcnow(),
            )
        )
        s.add(
            Checkpoint(
                id=new_id("ftckpt"),
                job_id=job_id,
                step_number=2,
                path=f"artifacts/{job_id}/checkpoints/step-00000002",
                manifest={},
            )
        )
    return Model(job_id, ft, f"{ft}:ckpt-step-2")


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {
        "acme_admin": make_key("acme", admin=True),
        "globex": make_key("globex"),
        "globex_admin": make_key("globex", admin=True),
        "initech": make_key("initech"),
    }


@pytest.fixture
def as_(live_api: str, keys: dict[str, str], api_key: str) -> Iterator[dict[str, OpenAI]]:
    clients = {name: OpenAI(base_url=f"{live_api}/v1", api_key=key, max_retries=0) for name, key in keys.items()}
    clients["acme"] = OpenAI(base_url=f"{live_api}/v1", api_key=api_key, max_retries=0)
    yield clients
    for c in clients.values():
        c.close()


def test_the_owners_admin_key_shares_lists_pages_and_revokes(
    as_: dict[str, OpenAI], settings: Settings, tiny_model: str
) -> None:
    m = trained_row(settings, tiny_model)
    globex, initech = org_id_of("globex"), org_id_of("initech")
    perms = as_["acme_admin"].fine_tuning.checkpoints.permissions

    created = perms.create(m.ckpt, project_ids=[globex, initech, globex])
    assert [p.project_id for p in created.data] == [globex, initech]
    assert all(p.object == "checkpoint.permission" and p.id.startswith("cp-") for p in created.data)
    again = perms.create(m.ckpt, project_ids=[globex])  # an existing grant is returned, not doubled
    assert [p.id for p in again.data] == [created.data[0].id]

    listed = perms.retrieve(m.ckpt)
    assert listed.object == "list" and not listed.has_more
    assert [p.project_id for p in listed.data] == [initech, globex]  # newest first
    oldest_first = perms.retrieve(m.ckpt, order="ascending")
    assert [p.project_id for p in oldest_first.data] == [globex, initech]
    page = perms.retrieve(m.ckpt, limit=1)
    assert page.has_more and page.last_id == page.data[0].id
    rest = perms.retrieve(m.ckpt, limit=1, after=page.data[0].id)
    assert [p.project_id for p in rest.data] == [globex] and not rest.has_more
    assert [p.project_id for p in perms.retrieve(m.ckpt, project_id=initech).data] == [initech]
    # The SDK's `list` pages on by itself (after= the last id), as docs/api.md shows.
    assert [p.project_id for p in perms.list(m.ckpt, order="ascending", limit=1)] == [globex, initech]
    # Any key of the owner reads the list; only its admin keys change it.
    assert len(as_["acme"].fine_tuning.checkpoints.permissions.retrieve(m.ckpt).data) == 2
    with pytest.raises(openai.PermissionDeniedError) as denied:
        as_["acme"].fine_tuning.checkpoints.permissions.create(m.ckpt, project_ids=[globex])
    assert denied.value.code == "admin_required"
    with pytest.raises(openai.PermissionDeniedError):
        as_["acme"].fine_tuning.checkpoints.permissions.delete(created.data[0].id, fine_tuned_model_checkpoint=m.ckpt)

    # A grantee, even with an admin key, and anyone else: the 404 of a checkpoint that does not exist.
    for name in ("globex", "globex_admin", "initech"):
        other = as_[name].fine_tuning.checkpoints.permissions
        with pytest.raises(openai.NotFoundError):
            other.retrieve(m.ckpt)
        with pytest.raises(openai.NotFoundError):
            other.create(m.ckpt, project_ids=[org_id_of("acme")])
        with pytest.raises(openai.NotFoundError):
            other.delete(created.data[0].id, fine_tuned_model_checkpoint=m.ckpt)

    gone = perms.delete(created.data[0].id, fine_tuned_model_checkpoint=m.ckpt)
    assert gone.id == created.data[0].id and gone.deleted and gone.object == "checkpoint.permission"
    assert [p.project_id for p in perms.retrieve(m.ckpt).data] == [initech]
    with pytest.raises(openai.NotFoundError) as nf:
        perms.delete(created.data[0].id, fine_tuned_model_checkpoint=m.ckpt)
    assert nf.value.param == "permission_id"


def test_bad_shares_are_400s_naming_the_field_and_unknown_models_404s(
    as_: dict[str, OpenAI], settings: Settings, tiny_model: str
) -> None:
    m = trained_row(settings, tiny_model)
    perms = as_["acme_admin"].fine_tuning.checkpoints.permissions
    cases = [
        ([org_id_of("globex"), org_id_of("acme")], "project_ids.1"),
        (["org-doesnotexist"], "project_ids.0"),
        ([], "project_ids"),
    ]
    for project_ids, param in cases:
        with pytest.raises(openai.BadRequestError) as bad:
            perms.create(m.ft, project_ids=project_ids)
        assert bad.value.param == param, bad.value
    assert perms.retrieve(m.ft).data == []  # nothing was written by a refused request
    for missing in (tiny_model, m.ft.replace(m.job_id, "ftjob-doesnotexist"), f"{m.ft}:ckpt-step-9", "nonsense"):
        with pytest.raises(openai.NotFoundError) as nf:
            perms.create(missing, project_ids=[org_id_of("globex")])
        assert nf.value.param == "fine_tuned_model_checkpoint"


def test_a_shared_id_resolves_for_its_grantee_only(as_: dict[str, OpenAI], settings: Settings, tiny_model: str) -> None:
    m = trained_row(settings, tiny_model)
    globex, initech = org_id_of("globex"), org_id_of("initech")
    as_["acme_admin"].fine_tuning.checkpoints.permissions.create(m.ckpt, project_ids=[globex])

    shared = as_["globex"].models.retrieve(m.ckpt)
    assert shared.id == m.ckpt and shared.owned_by == org_id_of("acme")
    assert m.ckpt in {x.id for x in as_["globex"].models.list()}
    # Sharing the checkpoint shares that checkpoint only, not the final model.
    with pytest.raises(openai.NotFoundError):
        as_["globex"].models.retrieve(m.ft)
    with pytest.raises(openai.NotFoundError):
        as_["initech"].models.retrieve(m.ckpt)
    assert m.ckpt not in {x.id for x in as_["initech"].models.list()}
    with session_scope() as s:  # from_checkpoint, as the job service and the worker resolve it
        assert continuation.find(s, globex, m.ckpt).step == 2
        ckpt_id = continuation.find(s, org_id_of("acme"), m.ckpt).job.id
        assert ckpt_id == m.job_id
        for org, ref in ((initech, m.ckpt), (globex, m.ft)):
            with pytest.raises(NotFound):
                continuation.find(s, org, ref)


def test_deleting_a_fine_tuned_model_removes_its_files_and_keeps_its_job(
    as_: dict[str, OpenAI], live_api: str, api_key: str, settings: Settings, tiny_model: str
) -> None:
    m = trained_row(settings, tiny_model)
    as_["acme_admin"].fine_tuning.checkpoints.permissions.create(m.ft, project_ids=[org_id_of("globex")])
    assert as_["globex"].models.retrieve(m.ft).id == m.ft

    for name in ("globex", "initech"):  # not theirs to delete, shared or not
        with pytest.raises(openai.NotFoundError):
            as_[name].models.delete(m.ft)
    with pytest.raises(openai.BadRequestError) as base:
        as_["acme"].models.delete(tiny_model)
    assert base.value.code == "model_not_deletable"
    with pytest.raises(openai.BadRequestError) as ckpt:
        as_["acme"].models.delete(m.ckpt)
    assert ckpt.value.code == "model_not_deletable"

    deleted = as_["acme"].models.delete(m.ft)
    assert (deleted.id, deleted.object, deleted.deleted) == (m.ft, "model", True)
    root = settings.artifacts_dir / m.job_id
    assert not any((root / f).exists() for f in ("adapter", "merged/final", "gguf/final"))
    assert (root / "checkpoints" / "step-00000002" / "adapter" / "adapter_config.json").is_file()
    assert (root / "gguf" / "step-2" / "f16").is_dir()  # a checkpoint's export stays with it

    for name in ("acme", "globex"):
        with pytest.raises(openai.NotFoundError) as nf:
            as_[name].models.retrieve(m.ft)
        assert nf.value.code == "model_not_found"
        assert m.ft not in {x.id for x in as_[name].models.list()}
    with pytest.raises(openai.NotFoundError):
        as_["acme"].models.delete(m.ft)  # once
    job = as_["acme"].fine_tuning.jobs.retrieve(m.job_id)
    assert job.status == "succeeded" and job.fine_tuned_model == m.ft
    assert isinstance((job.model_extra or {}).get("model_deleted_at"), int)
    kept = as_["acme"].fine_tuning.jobs.retrieve(trained_row(settings, tiny_model).job_id)
    assert "model_deleted_at" not in (kept.model_extra or {})  # absent while the model exists
    events = [e.message for e in as_["acme"].fine_tuning.jobs.list_events(m.job_id)]
    assert any(e.startswith(f"Fine-tuned model {m.ft} deleted") for e in events)
    import httpx

    r = httpx.get(f"{live_api}/v1/fine_tuning/jobs/{m.job_id}/adapter", headers={"Authorization": f"Bearer {api_key}"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_deleted", r.text
    assert as_["acme"].models.retrieve(m.ckpt).id == m.ckpt  # its checkpoints stay models

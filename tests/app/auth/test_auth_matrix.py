"""Route by route: no key -> 401, a revoked key -> 401, another organization's ids -> 404 (the same
answer as an id that does not exist), and an admin key reads everything.

The table below must name every operation in the OpenAPI schema, so a new route cannot ship
without a row here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers import make_key, shakespeare_rows, upload_jsonl


@dataclass(frozen=True)
class World:
    """Org `acme` owns a trained job (adapter, checkpoint, metrics, events) and its file."""

    owner: str
    other: str
    admin: str
    revoked: str
    job_id: str
    file_id: str
    spare_file_id: str
    hook_id: str
    sweep_id: str
    ft_model: str
    upload_id: str

    def stand_ins(self) -> list[tuple[str, str]]:
        """Each id of acme's, and an id of the same kind that does not exist."""
        return [
            (self.ft_model, self.ft_model.replace(self.job_id, "ftjob-doesnotexist")),
            (self.job_id, "ftjob-doesnotexist"),
            (self.file_id, "file-doesnotexist"),
            (self.spare_file_id, "file-doesnotexist"),
            (self.hook_id, "wh-nope"),
            (self.sweep_id, "sweep-nope"),
            (self.upload_id, "upload-nope"),
        ]


@pytest.fixture(scope="module")
def world(api_key: str, other_key: str, tiny_model: str) -> Iterator[World]:
    from fastapi.testclient import TestClient

    from tuneforge.app.auth.service import authenticate, revoke_key
    from tuneforge.app.core.config import get_settings
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.main import create_app
    from tuneforge.worker.runner import execute

    get_settings().ensure_dirs()
    revoked = make_key("acme")
    with session_scope() as s:
        principal = authenticate(s, revoked)
        assert principal is not None
        revoke_key(s, principal.key_id)
    with TestClient(create_app(), headers={"Authorization": f"Bearer {api_key}"}) as c:
        file_id = upload_jsonl(c, shakespeare_rows(16))["id"]
        spare = upload_jsonl(c, shakespeare_rows(4), name="spare.jsonl")["id"]
        job = c.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": tiny_model,
                "training_file": file_id,
                "training": {"max_steps": 2, "batch_size": 4, "save_every": 1},
            },
        ).json()
        hook = c.post("/v1/webhooks", json={"url": "https://example.com/h", "events": ["fine_tuning.job.failed"]})
        sweep = c.post(
            "/v1/fine_tuning/sweeps",
            json={
                "model": tiny_model,
                "training_file": file_id,
                "training": {"max_steps": 2, "batch_size": 4},
                "search_space": {"training.learning_rate": {"values": [0.001, 0.01]}},
                "strategy": "grid",
                "objective": {"metric": "eval_loss"},
                "max_parallel": 1,
            },
        )
        assert sweep.status_code == 200, sweep.text
        upload = c.post(
            "/v1/uploads", json={"filename": "u.jsonl", "purpose": "fine-tune", "bytes": 15, "mime_type": "text/jsonl"}
        )
        assert upload.status_code == 200, upload.text
    # The task body itself, as a worker runs it: a real adapter, checkpoints, metrics and events.
    assert execute(job["id"], "auth-matrix-worker") == "succeeded"
    with TestClient(create_app(), headers={"Authorization": f"Bearer {api_key}"}) as c:
        ft_model = c.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["fine_tuned_model"]
    yield World(
        api_key,
        other_key,
        make_key("ops", admin=True),
        revoked,
        job["id"],
        file_id,
        spare,
        hook.json()["id"],
        sweep.json()["id"],
        ft_model,
        upload.json()["id"],
    )


# (method, path template) -> (path with ids, is_read). Reads are open to admins of any org;
# writes act on the caller's own organization only.
def routes(w: World) -> dict[tuple[str, str], tuple[str, bool]]:
    j, f = w.job_id, w.file_id
    return {
        ("get", "/healthz"): ("/healthz", True),
        ("get", "/readyz"): ("/readyz", True),
        ("get", "/metrics"): ("/metrics", True),
        ("post", "/v1/files"): ("/v1/files", False),
        ("get", "/v1/files"): ("/v1/files", True),
        ("get", "/v1/files/{file_id}"): (f"/v1/files/{f}", True),
        ("get", "/v1/files/{file_id}/content"): (f"/v1/files/{f}/content", True),
        ("delete", "/v1/files/{file_id}"): (f"/v1/files/{w.spare_file_id}", False),
        ("post", "/v1/fine_tuning/jobs"): ("/v1/fine_tuning/jobs", False),
        ("get", "/v1/fine_tuning/jobs"): ("/v1/fine_tuning/jobs", True),
        ("get", "/v1/fine_tuning/jobs/{job_id}"): (f"/v1/fine_tuning/jobs/{j}", True),
        ("post", "/v1/fine_tuning/jobs/{job_id}/cancel"): (f"/v1/fine_tuning/jobs/{j}/cancel", False),
        ("get", "/v1/fine_tuning/jobs/{job_id}/events"): (f"/v1/fine_tuning/jobs/{j}/events", True),
        ("get", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): (f"/v1/fine_tuning/jobs/{j}/checkpoints", True),
        ("get", "/v1/fine_tuning/jobs/{job_id}/metrics"): (f"/v1/fine_tuning/jobs/{j}/metrics", True),
        ("get", "/v1/fine_tuning/jobs/{job_id}/samples"): (f"/v1/fine_tuning/jobs/{j}/samples", True),
        ("get", "/v1/fine_tuning/jobs/{job_id}/adapter"): (f"/v1/fine_tuning/jobs/{j}/adapter", True),
        ("get", "/v1/fine_tuning/jobs/{job_id}/stream"): (f"/v1/fine_tuning/jobs/{j}/stream", True),
        ("post", "/v1/fine_tuning/jobs/{job_id}/pause"): (f"/v1/fine_tuning/jobs/{j}/pause", False),
        ("post", "/v1/fine_tuning/jobs/{job_id}/resume"): (f"/v1/fine_tuning/jobs/{j}/resume", False),
        # Graders are run for the caller; a judge model resolves within its own organization.
        ("post", "/v1/fine_tuning/alpha/graders/validate"): ("/v1/fine_tuning/alpha/graders/validate", False),
        ("post", "/v1/fine_tuning/alpha/graders/run"): ("/v1/fine_tuning/alpha/graders/run", False),
        ("post", "/v1/fine_tuning/sweeps"): ("/v1/fine_tuning/sweeps", False),
        ("get", "/v1/fine_tuning/sweeps"): ("/v1/fine_tuning/sweeps", True),
        ("get", "/v1/fine_tuning/sweeps/{sweep_id}"): (f"/v1/fine_tuning/sweeps/{w.sweep_id}", True),
        ("get", "/v1/fine_tuning/sweeps/{sweep_id}/trials"): (f"/v1/fine_tuning/sweeps/{w.sweep_id}/trials", True),
        ("post", "/v1/fine_tuning/sweeps/{sweep_id}/cancel"): (f"/v1/fine_tuning/sweeps/{w.sweep_id}/cancel", False),
        ("get", "/v1/models"): ("/v1/models", True),
        # A fine-tuned model is served to its own organization only, admin keys included.
        ("get", "/v1/models/{model_id}"): (f"/v1/models/{w.ft_model}", False),
        ("delete", "/v1/models/{model_id}"): (f"/v1/models/{w.ft_model}", False),
        # A checkpoint's permissions are its owner's alone: shared or not, admin or not, others get 404.
        ("post", "/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions"): (
            f"/v1/fine_tuning/checkpoints/{w.ft_model}/permissions",
            False,
        ),
        ("get", "/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions"): (
            f"/v1/fine_tuning/checkpoints/{w.ft_model}/permissions",
            False,
        ),
        ("delete", "/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions/{permission_id}"): (
            f"/v1/fine_tuning/checkpoints/{w.ft_model}/permissions/cp-nope",
            False,
        ),
        ("post", "/v1/chat/completions"): ("/v1/chat/completions", False),
        ("post", "/v1/completions"): ("/v1/completions", False),
        # Webhooks belong to an organization: an admin key manages only its own.
        ("post", "/v1/webhooks"): ("/v1/webhooks", False),
        ("get", "/v1/webhooks"): ("/v1/webhooks", False),
        ("get", "/v1/webhooks/{webhook_id}"): (f"/v1/webhooks/{w.hook_id}", False),
        ("delete", "/v1/webhooks/{webhook_id}"): (f"/v1/webhooks/{w.hook_id}", False),
        ("get", "/v1/webhooks/{webhook_id}/deliveries"): (f"/v1/webhooks/{w.hook_id}/deliveries", False),
        # Uploads change state only: an admin key reaches only its own organization's.
        ("post", "/v1/uploads"): ("/v1/uploads", False),
        ("post", "/v1/uploads/{upload_id}/parts"): (f"/v1/uploads/{w.upload_id}/parts", False),
        ("post", "/v1/uploads/{upload_id}/complete"): (f"/v1/uploads/{w.upload_id}/complete", False),
        ("post", "/v1/uploads/{upload_id}/cancel"): (f"/v1/uploads/{w.upload_id}/cancel", False),
    }


ROUTE_KEYS = sorted(routes(World(*"abcdefghijk")))
PUBLIC = {("get", "/healthz")}


def test_the_table_names_every_operation(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    operations = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert operations == set(ROUTE_KEYS)


def call(client: httpx.Client, method: str, path: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {"Authorization": ""}
    if method == "post" and path == "/v1/files":
        return client.post(path, headers=headers, files={"file": ("x.jsonl", b'{"text": "hi"}\n')}, data={})
    if method == "post" and path == "/v1/fine_tuning/jobs":
        return client.post(path, headers=headers, json={})
    if method == "post" and path.endswith("/permissions"):
        return client.post(path, headers=headers, json={"project_ids": ["org-x"]})
    if method == "post" and path.endswith("/complete"):
        return client.post(path, headers=headers, json={"part_ids": ["part-x"]})
    return client.request(method.upper(), path, headers=headers)


@pytest.mark.parametrize(("method", "template"), ROUTE_KEYS)
def test_no_key_and_revoked_key_get_401(client: httpx.Client, world: World, method: str, template: str) -> None:
    path, _ = routes(world)[(method, template)]
    for key in (None, world.revoked, "tf-not-a-real-key"):
        r = call(client, method, path, key)
        if (method, template) in PUBLIC:
            assert r.status_code == 200
            continue
        assert r.status_code == 401, (key, r.text)
        assert r.json()["error"]["type"] == "authentication_error"


ID_ROUTES = [k for k in ROUTE_KEYS if "{" in k[1]]


@pytest.mark.parametrize(("method", "template"), ID_ROUTES)
def test_another_orgs_id_is_a_404_like_a_missing_one(
    client: httpx.Client, world: World, method: str, template: str
) -> None:
    path, _ = routes(world)[(method, template)]
    theirs = call(client, method, path, world.other)
    missing_path = path
    for real, fake in world.stand_ins():
        missing_path = missing_path.replace(real, fake)
    missing = call(client, method, missing_path, world.other)
    assert theirs.status_code == missing.status_code == 404, theirs.text
    # Indistinguishable: the same code, and a message that names only the id that was asked for.
    assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
    theirs_message, missing_message = theirs.json()["error"]["message"], missing.json()["error"]["message"]
    for real, fake in world.stand_ins():
        theirs_message, missing_message = theirs_message.replace(real, "X"), missing_message.replace(fake, "X")
    assert theirs_message == missing_message


def test_lists_show_only_the_callers_organization(client: httpx.Client, world: World) -> None:
    other = {"Authorization": f"Bearer {world.other}"}
    jobs = client.get("/v1/fine_tuning/jobs", headers=other, params={"limit": 1000}).json()["data"]
    files = client.get("/v1/files", headers=other, params={"limit": 10000}).json()["data"]
    assert world.job_id not in {j["id"] for j in jobs}
    assert not {world.file_id, world.spare_file_id} & {f["id"] for f in files}
    # A cursor from another organization does not page into it either.
    r = client.get("/v1/fine_tuning/jobs", headers=other, params={"after": world.job_id}).json()
    assert all(j["organization_id"] != jobs_org(client, world) for j in r["data"])


def jobs_org(client: httpx.Client, world: World) -> str:
    return client.get(
        f"/v1/fine_tuning/jobs/{world.job_id}", headers={"Authorization": f"Bearer {world.owner}"}
    ).json()["organization_id"]


@pytest.mark.parametrize(("method", "template"), [k for k in ROUTE_KEYS if routes(World(*"abcdefghijk"))[k][1]])
def test_an_admin_key_reads_everything(client: httpx.Client, world: World, method: str, template: str) -> None:
    path, _ = routes(world)[(method, template)]
    r = call(client, method, path, world.admin)
    assert r.status_code == 200, r.text
    if template == "/v1/fine_tuning/jobs/{job_id}":
        assert r.json()["organization_id"] == jobs_org(client, world)  # acme's, not the admin's


def test_admin_lists_all_organizations_only_when_asked(client: httpx.Client, world: World) -> None:
    admin = {"Authorization": f"Bearer {world.admin}"}
    own = client.get("/v1/fine_tuning/jobs", headers=admin, params={"limit": 1000}).json()["data"]
    assert world.job_id not in {j["id"] for j in own}
    every = client.get("/v1/fine_tuning/jobs", headers=admin, params={"limit": 1000, "all_organizations": True})
    assert world.job_id in {j["id"] for j in every.json()["data"]}
    assert len({j["organization_id"] for j in every.json()["data"]}) >= 1
    r = client.get("/v1/fine_tuning/jobs", params={"all_organizations": True})
    assert r.status_code == 403
    assert r.json()["error"] == {
        "message": "all_organizations=true needs an admin key (tuneforge keys create --admin).",
        "type": "permission_error",
        "param": "all_organizations",
        "code": "admin_required",
    }


@pytest.mark.parametrize(("method", "template"), [k for k in ID_ROUTES if not routes(World(*"abcdefghijk"))[k][1]])
def test_an_admin_key_changes_only_its_own_org(client: httpx.Client, world: World, method: str, template: str) -> None:
    path, _ = routes(world)[(method, template)]
    assert call(client, method, path, world.admin).status_code == 404


def test_revoking_a_key_takes_effect_on_the_next_request(client: httpx.Client) -> None:
    from tuneforge.app.auth.service import authenticate, revoke_key
    from tuneforge.app.db.engine import session_scope

    key = make_key("acme")
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with session_scope() as s:
        principal = authenticate(s, key)
        assert principal is not None and revoke_key(s, principal.key_id)
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 401

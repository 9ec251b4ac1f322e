"""Model delete and result files on an S3 store (moto's server, a real subprocess): the adapter's
objects leave the bucket and this host's downloaded copy goes; an unreachable bucket is a 503 that
changes nothing; a finished job's results CSV is written to the bucket and streamed back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from tests.helpers import S3_BUCKET, S3_CREDENTIALS, FaultyProxy, insert_job, make_spec, org_id_of
from tuneforge.app.core.config import Settings
from tuneforge.app.core.storage import get_store
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Job, JobMetric
from tuneforge.app.db.types import utcnow
from tuneforge.app.jobs import lifecycle
from tuneforge.storage import ArtifactStore


@pytest.fixture
def proxy(moto_s3: str) -> Iterator[FaultyProxy]:
    p = FaultyProxy(int(moto_s3.rsplit(":", 1)[1]))
    yield p
    p.close()


@pytest.fixture
def s3(settings: Settings, proxy: FaultyProxy, monkeypatch: pytest.MonkeyPatch) -> ArtifactStore:
    """The API's store pointed at a fresh prefix of the test bucket, through a proxy a test can break."""
    for k, v in S3_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(settings, "artifact_store", f"s3://{S3_BUCKET}/delete-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(settings, "s3_endpoint_url", proxy.url)
    monkeypatch.setattr(settings, "store_retry_seconds", 0.5)
    return get_store(settings)


def test_deleting_a_model_empties_its_prefix_and_an_outage_changes_nothing(
    client: httpx.Client, s3: ArtifactStore, proxy: FaultyProxy, settings: Settings, tiny_model: str
) -> None:
    org = org_id_of("acme")
    job_id = insert_job(org, "succeeded", model=tiny_model, spec=make_spec().model_dump(mode="json"))
    ft = f"ft:{tiny_model}:{org}::{job_id}"
    key = f"artifacts/{job_id}/adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "MANIFEST.json"):
        s3.put_bytes(f"{key}/{name}", b"{}")
    s3.put_bytes(f"artifacts/{job_id}/checkpoints/step-00000002/adapter/adapter_config.json", b"{}")
    cached = settings.cache_dir / "folders" / key  # what a merge or a chat on this host downloaded
    cached.mkdir(parents=True)
    (cached / "adapter_config.json").write_text("{}")
    with session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(fine_tuned_model=ft, adapter_path=key, adapter_manifest={}, finished_at=utcnow())
        )

    proxy.set("down")
    r = client.delete(f"/v1/models/{ft}")
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    proxy.set("up")
    assert client.get(f"/v1/models/{ft}").status_code == 200  # nothing was committed
    assert "model_deleted_at" not in client.get(f"/v1/fine_tuning/jobs/{job_id}").json()

    r = client.delete(f"/v1/models/{ft}")
    assert r.status_code == 200 and r.json() == {"id": ft, "object": "model", "deleted": True}, r.text
    assert s3.list(key) == [] and not cached.exists()
    assert s3.list(f"artifacts/{job_id}/checkpoints") != []  # checkpoints stay
    assert client.get(f"/v1/models/{ft}").status_code == 404


def test_a_results_file_goes_to_the_bucket_and_streams_back(client: httpx.Client, s3: ArtifactStore) -> None:
    job_id = insert_job(org_id_of("acme"), "running", worker_id="w-s3", spec=make_spec().model_dump(mode="json"))
    with session_scope() as s:
        s.add(JobMetric(job_id=job_id, step=1, loss=2.5))
    with session_scope() as s:
        assert lifecycle.succeed(s, job_id, "w-s3", fine_tuned_model="ft:x")
    (file_id,) = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["result_files"]
    assert s3.get_bytes(f"files/{file_id}").decode().splitlines()[1] == "1,2.5,,,"
    body = client.get(f"/v1/files/{file_id}/content")
    assert body.status_code == 200 and body.text.splitlines()[1] == "1,2.5,,,"

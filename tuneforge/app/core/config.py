"""One settings object for the API, the worker and the CLI.

Every value comes from an environment variable with the prefix ``TUNEFORGE_``. The defaults are the
embedded, single-box setup (SQLite + a server-less broker under ``data_dir``); ``env=production``
refuses the defaults that are only safe on a laptop.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tuneforge.app.core.loops import LoopName, parse_loop_names

# Passwords that ship in examples and images; a production deployment must not run on them.
DEFAULT_SECRETS = frozenset(
    ("", "postgres", "password", "secret", "changeme", "change-me", "tuneforge", "admin", "redis", "guest")
)


def _secret_problems(name: str, url: str) -> list[str]:
    """A server URL in production must carry a password, and not a well-known one."""
    if url.startswith(("sqlite", "sqla+")):
        return []  # refused separately
    password = _url_password(url)
    if password is None or password.lower() in DEFAULT_SECRETS:
        return [f"{name} must include a non-default password"]
    return []


def _url_password(url: str) -> str | None:
    parts = urlsplit(url)
    return unquote(parts.password) if parts.password is not None else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", extra="ignore")

    env: Literal["local", "production"] = Field(
        "local", description="`production` refuses SQLite, the server-less broker and open CORS."
    )
    data_dir: Path = Field(Path(".tuneforge"), description="Uploads, artifacts and embedded databases.")
    # The next three default to places inside data_dir; `_fill_defaults` derives them before
    # validation, so they are never None once a Settings exists.
    models_dir: Path = Field(
        Path(".tuneforge/models"),
        description="The only directory base models load from. Defaults to `<data_dir>/models`.",
    )
    database_url: str = Field(
        "sqlite:///.tuneforge/tuneforge.db",
        description="SQLAlchemy URL. Defaults to SQLite at `<data_dir>/tuneforge.db`.",
    )
    broker_url: str = Field(
        "sqla+sqlite:///.tuneforge/broker.db",
        description="Celery broker. Defaults to kombu's SQLAlchemy transport at `<data_dir>/broker.db`.",
    )
    artifact_store: str = Field(
        "file://.tuneforge",
        description="Where uploads, checkpoints and adapters live: `file://<dir>` or `s3://bucket/prefix`. "
        "Defaults to `file://<data_dir>`. With s3://, API and workers share only the database, the broker "
        "and the bucket.",
    )
    llama_cpp_dir: Path = Field(
        Path("~/.cache/tuneforge/llama.cpp-0.3.36"),
        description="llama.cpp from llama-cpp-python's sdist, as scripts/llama_cpp.sh leaves it: its converters "
        "make the GGUF exports (format=gguf, gguf-lora), its build/bin/llama-quantize the q4_k_m one.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto...); unset: AWS. Credentials: the AWS_* variables."
    )
    s3_presigned_downloads: bool = Field(
        False, description="Answer file downloads with a 307 to a presigned bucket URL instead of streaming them."
    )
    s3_presign_seconds: int = Field(900, ge=1, le=604800, description="Lifetime of a presigned download URL.")
    store_retry_seconds: float = Field(
        600.0, gt=0, description="How long a worker keeps retrying an unreachable store before failing the job."
    )
    devices_per_job: int = Field(
        1, ge=1, le=64, description="Devices (processes) each job trains on, data parallel; `--devices-per-job`."
    )
    ddp_timeout_seconds: float = Field(
        300.0, gt=0, description="How long a rank of a multi-device job waits for the others before giving up."
    )
    host_memory: Literal["auto", "fast", "lean"] = Field(
        "auto",
        description="A CPU training worker's allocator mode: `fast` keeps freed activations in the process's "
        "heap (as a bare training script does), `lean` returns them to the OS at once (a smaller process, "
        "steps up to 1.8x slower), `auto` is fast until the process holds half the memory within its reach, "
        "then lean (tuneforge/worker/training/host_memory.py). No effect on GPU workers.",
    )
    queue: str = Field("gpu", description="Celery queue that training workers consume.")
    inference_queue: str = Field(
        "inference", description="Celery queue that inference workers (`tuneforge worker --queue inference`) consume."
    )
    max_inference_tokens: int = Field(
        1024, ge=1, description="Largest `max_tokens` a chat/completion request may ask for; above it is a 400."
    )
    inference_timeout_seconds: float = Field(
        120.0, gt=0, description="A chat/completion request not finished in this long (queue wait included) is a 504."
    )
    inference_cache_size: int = Field(
        2, ge=1, description="Models (a base, or a base with one adapter) an inference worker keeps loaded (LRU)."
    )
    # The inference backend (docs/serving.md): Tuneforge's own workers, or a vLLM server that serves every
    # adapter of one base at once, behind the same routes (tuneforge/app/inference/vllm/).
    inference_backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="Who generates for /v1/chat/completions and /v1/completions: `transformers` (the inference "
        "workers, the embedded default) or `vllm` (the server at TUNEFORGE_VLLM_URL).",
    )
    vllm_url: str = Field(
        "http://127.0.0.1:8100",
        pattern=r"^https?://[^/]+/?$",
        description="Root URL of the vLLM server (without /v1); never exposed to tenants.",
    )
    vllm_api_key: str | None = Field(
        None, description="The key vLLM was started with (`--api-key`), sent on every call to it."
    )
    vllm_adapters_dir: Path | None = Field(
        None,
        description="Where Tuneforge writes adapters for vLLM to load: a disk (volume) vLLM reads at the same "
        "path. Default <data dir>/vllm-adapters.",
    )
    vllm_venv: Path = Field(
        Path(".venv-vllm"),
        description="vLLM's own environment, which `tuneforge vllm` runs (scripts/vllm_env.sh makes it); a "
        "relative path is looked up in the working directory, then in the source checkout.",
    )
    vllm_max_adapters: int = Field(
        8, ge=1, description="Adapters kept loaded in vLLM per API process (least recently used unloaded first)."
    )
    vllm_retry_after_seconds: int = Field(
        5, ge=1, description="Retry-After of the 503 answered while vLLM is down or restarting."
    )
    # Fair shares of the API (docs/security.md, "Limits"): what one organization may hold at once.
    max_inference_requests_per_org: int = Field(
        8,
        ge=1,
        description="Chat/completion requests of one org in flight at once (streamed or not); more answer 429 "
        "with Retry-After. Counted across API processes in Redis when the broker is Redis.",
    )
    max_streams_per_org: int = Field(
        20,
        ge=1,
        description="Open job event streams (`/v1/fine_tuning/jobs/{id}/stream`) of one org; more answer 429 "
        "with Retry-After.",
    )
    max_uploads_per_org: int = Field(
        4,
        ge=1,
        description="Upload requests of one org in flight at once (`POST /v1/files`, upload parts and completions: "
        "each streams a body to disk or validates a file); more answer 429 with Retry-After.",
    )
    upload_requests_per_minute_per_org: int = Field(
        300,
        ge=1,
        description="Upload requests (`POST /v1/files`, upload parts and completions) one org may start a minute, "
        "a sixth of them at once; more answer 429 `rate_limit_exceeded` with Retry-After. Bounds the API's CPU one "
        "tenant's small uploads take (tuneforge/app/core/rates.py).",
    )
    max_exports_per_org: int = Field(
        2,
        ge=1,
        description="Model exports (`adapter?format=merged`) one org may have building at once; a request for "
        "another answers 429 with Retry-After. Requests for an export already building wait for it instead.",
    )
    max_concurrent_exports: int = Field(
        2,
        ge=1,
        description="Model exports one API process builds at once, across organizations (each loads the base "
        "model in a child process); more wait their turn.",
    )
    max_inference_body_mb: float = Field(
        16.0, gt=0, description="Largest chat/completion request body; above it is a 413, refused while it streams in."
    )
    # The HTTP server (`tuneforge api`, `tuneforge up`): bounds on what a client may send before it is
    # authenticated (tuneforge/app/core/http_limits.py).
    max_header_bytes: int = Field(
        32768, ge=1024, description="Largest request line + headers of one request; above it is a 431."
    )
    max_headers: int = Field(100, ge=8, description="Most header fields in one request; above it is a 431.")
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection must send a request's complete headers within this long of its first byte "
        "(or of connecting); else a 408 and the connection closes.",
    )
    broker_poll_seconds: float = Field(
        0.1,
        gt=0,
        description="How often a worker polls the embedded (SQLAlchemy) broker for a message; kombu's default "
        "is 1 s, which a job paid on average half of before it started. Redis needs no polling.",
    )
    host: str = Field("127.0.0.1", description="Address `tuneforge api` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `tuneforge api` listens on.")

    max_upload_mb: int = Field(
        512, gt=0, description="Largest file `POST /v1/files` accepts (OpenAI's 512 MB), enforced while streaming."
    )
    max_upload_rows: int = Field(1_000_000, gt=0)
    max_line_bytes: int = Field(1_000_000, gt=0, description="Longest accepted JSONL line / CSV row.")

    lease_seconds: int = Field(120, ge=10, description="How long a worker's claim on a job lasts unrenewed.")
    heartbeat_seconds: float = Field(5.0, gt=0, description="How often a worker renews its lease.")
    metrics_flush_seconds: float = Field(2.0, gt=0, description="Metrics are batched for this long.")
    max_attempts: int = Field(3, ge=1)
    reconcile_seconds: float = Field(15.0, gt=0)
    queued_resend_seconds: float = Field(60.0, gt=0, description="Re-send a queued job's message after this.")
    # NoDecode: a comma-separated list, not JSON.
    disabled_loops: Annotated[frozenset[LoopName], NoDecode] = Field(
        frozenset(),
        description="Background loops this process does not run, comma-separated: `reconciler`, `sweeps`, "
        "`webhooks` (an API process's; `tuneforge api --no-reconciler` is all three) and `presence` (a "
        "worker's). An unknown name stops the process at start-up.",
    )

    # Spec caps: what one job may ask of a GPU. Over a cap is a 400 naming the field.
    max_steps: int = Field(100_000, ge=1, description="Largest training.max_steps a job may set.")
    max_epochs: int = Field(100, ge=1, description="Largest training.epochs (or n_epochs).")
    max_seq_length: int = Field(8192, ge=8, description="Largest training.max_seq_length.")
    max_lora_r: int = Field(256, ge=1, description="Largest lora.r.")
    max_batch_size: int = Field(256, ge=1, description="Largest training.batch_size.")
    # Reinforcement fine-tuning's `python` grader runs tenant code: off unless the operator turns it on
    # (docs/security.md). The sandbox (tuneforge/contract/graders/sandbox.py) reads the same variables.
    python_grader_enabled: bool = Field(False, description="Allow `python` graders (run in the sandbox).")
    python_grader_timeout_seconds: float = Field(10.0, gt=0, description="Wall-clock limit of one python grade.")
    python_grader_cpu_seconds: int = Field(5, ge=1, description="CPU-time limit (RLIMIT_CPU) of one python grade.")
    python_grader_memory_mb: int = Field(512, ge=64, description="Address-space limit (RLIMIT_AS) of a python grade.")
    python_grader_output_bytes: int = Field(65_536, ge=1024, description="Largest file a python grader may write.")
    # Per-organization fairness: one tenant cannot hold every GPU or flood the queue.
    max_running_jobs_per_org: int = Field(
        4, ge=1, description="Jobs of one org training at once; more wait in `queued`."
    )
    max_queued_jobs_per_org: int = Field(
        50,
        ge=1,
        description="Queued and paused jobs per org (checked under a lock on the org's row); a POST over it "
        "answers 429 with Retry-After.",
    )
    # Uploads in parts (`/v1/uploads`, tuneforge/app/uploads/): OpenAI's limits by default.
    max_upload_part_mb: int = Field(64, gt=0, description="Largest part of a `/v1/uploads` upload.")
    max_multipart_upload_gb: float = Field(
        8,
        gt=0,
        # S3 allows 10,000 parts and every part but the last is at least 5 MiB: 48 GiB is the most
        # an assembly can always be planned for, whatever the clients' part sizes.
        le=48,
        description="Largest file `/v1/uploads` assembles (the sum of its parts).",
    )
    upload_expires_seconds: int = Field(
        3600, ge=1, description="An upload not completed this long after it was created expires; its parts are removed."
    )
    upload_sweep_seconds: float = Field(
        60.0, gt=0, description="How often each API process removes the parts of expired and cancelled uploads."
    )
    org_storage_quota_gb: float = Field(
        100,
        gt=0,
        description="Bytes one organization may keep: its files plus its pending uploads (their declared "
        "`bytes`, or what their parts hold if more). Over it is a 413 naming this setting.",
    )

    max_sweep_trials: int = Field(
        100, ge=1, description="Most trials one sweep may run (its max_trials, and a grid's size)."
    )
    sweep_seconds: float = Field(5.0, gt=0, description="How often the sweep driver starts trials and prunes.")

    worker_gpu_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory of the largest worker GPU. Jobs whose estimated peak does not fit are refused "
        "at submission (unset: no check, e.g. CPU-only workers).",
    )

    # Webhooks (tuneforge/app/webhooks/): delivered from the outbox table by a thread in each API process.
    webhooks_allow_private: bool = Field(
        False, description="Allow webhook URLs that resolve to private, loopback or link-local addresses (SSRF)."
    )
    webhook_poll_seconds: float = Field(1.0, gt=0, description="How often the deliverer looks for due deliveries.")
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="How long one webhook POST may take.")
    webhook_max_attempts: int = Field(8, ge=1, description="Attempts before a delivery is marked failed.")
    webhook_backoff_seconds: float = Field(
        5.0, gt=0, description="First retry delay; doubled after each failed attempt (capped at one hour)."
    )
    # Job integrations (tuneforge/worker/tracking/): trackers the training worker logs to from a background thread.
    wandb_mode: Literal["offline", "online"] = Field(
        "offline",
        description="W&B runs: `offline` writes each run under TUNEFORGE_WANDB_DIR for `wandb sync` to upload "
        "later (no network needed); `online` sends them with the worker's WANDB_API_KEY.",
    )
    wandb_dir: Path | None = Field(None, description="Where W&B run folders are written. Default <data dir>/wandb.")
    mlflow_tracking_uris: list[str] = Field(
        default_factory=list,
        description="MLflow tracking servers jobs may log to, as a JSON list of http(s) URLs; the first is the "
        "default when an `mlflow` integration names none. Empty: `mlflow` integrations are refused.",
    )
    tracker_buffer_points: int = Field(
        10_000,
        ge=10,
        description="Metric points a tracker holds while its server is down; past it the oldest are dropped "
        "(and counted in the job's event).",
    )
    tracker_retry_max_seconds: float = Field(
        60.0, gt=0, description="Longest wait between retries to a tracker that is down (backoff from 1 s)."
    )
    tracker_close_seconds: float = Field(
        30.0,
        ge=0,
        description="After a job's outcome is recorded, how long the worker waits for its trackers to send what "
        "they hold before it takes the next job.",
    )
    # GPU-class routing: class name -> memory in GB, e.g. {"gpu-24g": 24, "gpu-80g": 80}. Each class is a
    # Celery queue of that name; a job goes to the smallest class its estimated peak fits.
    gpu_queues: dict[str, float] = Field(
        default_factory=dict,
        description='GPU classes as JSON, name -> memory GB (e.g. `{"gpu-24g": 24, "gpu-80g": 80}`). '
        "Jobs go to the smallest class that fits; empty: every job goes to TUNEFORGE_QUEUE.",
    )
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="How long an API process trusts a key lookup (revocation in this process is instant)."
    )

    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins; none (off) by default.")
    allow_hub: bool = Field(
        False, description="Accept Hugging Face Hub ids for `model` (downloaded by the worker, safetensors only)."
    )
    allow_pickle_weights: bool = Field(
        False, description="Accept models whose only weights are pickle files (.bin/.pt). Unsafe: pickle runs code."
    )

    @field_validator("disabled_loops", mode="before")
    @classmethod
    def _loop_names(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_loop_names(value)
        except ValueError as exc:
            raise ValueError(f"TUNEFORGE_DISABLED_LOOPS: {exc}") from exc

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """Paths and URLs that default to the data dir, whichever data dir was configured."""
        if not isinstance(data, dict):
            return data
        data_dir = Path(data.get("data_dir") or ".tuneforge").expanduser().resolve()
        defaults = {
            "data_dir": data_dir,
            "models_dir": data_dir / "models",
            "database_url": f"sqlite:///{data_dir / 'tuneforge.db'}",
            "broker_url": f"sqla+sqlite:///{data_dir / 'broker.db'}",
            "artifact_store": f"file://{data_dir}",
        }
        return {**data, **{k: v for k, v in defaults.items() if data.get(k) in (None, "")}}

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        self.models_dir = self.models_dir.expanduser().resolve()
        if self.vllm_adapters_dir is None:
            self.vllm_adapters_dir = self.data_dir / "vllm-adapters"
        self.vllm_adapters_dir = self.vllm_adapters_dir.expanduser().resolve()
        if not self.artifact_store.startswith(("file://", "s3://")):
            raise ValueError("TUNEFORGE_ARTIFACT_STORE must be file://<dir> or s3://bucket/prefix")
        if self.env == "production":
            problems = []
            if self.database_url.startswith("sqlite"):
                problems.append("TUNEFORGE_DATABASE_URL must point at PostgreSQL, not SQLite")
            if self.broker_url.startswith("sqla+"):
                problems.append("TUNEFORGE_BROKER_URL must point at Redis, not the embedded broker")
            if "*" in self.cors_origins:
                problems.append("TUNEFORGE_CORS_ORIGINS must list origins, not '*'")
            problems += _secret_problems("TUNEFORGE_DATABASE_URL", self.database_url)
            problems += _secret_problems("TUNEFORGE_BROKER_URL", self.broker_url)
            if problems:
                raise ValueError("unsafe settings for env=production: " + "; ".join(problems))
        return self

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def cache_dir(self) -> Path:
        """A worker's local copies of inputs it read from a remote store."""
        return self.data_dir / "cache"

    @property
    def wandb_root(self) -> Path:
        """Where W&B writes run folders (`<this>/wandb/offline-run-*`): TUNEFORGE_WANDB_DIR, or under the data dir."""
        return (self.wandb_dir or self.data_dir / "wandb").expanduser().resolve()

    @property
    def store_is_remote(self) -> bool:
        return self.artifact_store.startswith("s3://")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.uploads_dir, self.artifacts_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()

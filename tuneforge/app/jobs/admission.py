"""What a job must pass before it is queued: its data's recorded columns, the operator's caps, the
largest worker GPU, and the organization's queue room. Each failure is a 4xx naming the field."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import APIError, InvalidRequest, TooManyRequests
from tuneforge.app.db.models import File
from tuneforge.app.files.preference import PREFERENCE_FIELDS
from tuneforge.app.jobs import continuation, repository
from tuneforge.app.jobs.integrations import check_integrations
from tuneforge.app.jobs.memory_estimate import GB, RUNTIME_ALLOWANCE_GB, estimate
from tuneforge.app.jobs.model_path import resolve_model_dir
from tuneforge.contract.formats import SHAPES, detect_columns, shapes_of
from tuneforge.contract.graders.shapes import PythonGrader, judge_models, leaves, templates
from tuneforge.contract.graders.template import item_fields
from tuneforge.contract.spec import JobSpec, RowShape, SpecError
from tuneforge.contract.spec.data import data_fields
from tuneforge.contract.status import WAITING, JobStatus

# How long a client over the queued-jobs limit is told to wait; jobs take minutes, not seconds.
RETRY_AFTER_SECONDS = 30


def check_data_against_spec(spec: JobSpec, f: File, param: str) -> None:
    """What can be known from the recorded columns is checked at submission, naming the field."""
    cols = f.columns or {}
    d = spec.data
    listed = ", ".join(sorted(cols)) or "none"
    if spec.row_shape is RowShape.PREFERENCE:
        missing = [name for name in PREFERENCE_FIELDS if name not in cols]
        if missing:
            raise InvalidRequest(
                f"File {f.id} has columns [{listed}]; method.type={spec.method} needs preference rows with "
                f"{', '.join(repr(n) for n in PREFERENCE_FIELDS)} (missing: {', '.join(missing)}).",
                param=param,
                code="invalid_file",
            )
        return
    if spec.row_shape is RowShape.PROMPT:
        _check_prompt_rows(spec, f, cols, listed, param)
        return
    if spec.task == "causal_lm":
        fields = data_fields(d)
        if d.format in SHAPES:
            if d.format not in shapes_of(cols, fields):
                raise InvalidRequest(
                    f"data.format is {d.format}, but file {f.id} has columns [{listed}] "
                    f"(detected: {detect_columns(cols, fields) or 'none'}).",
                    param="data.format",
                    code="invalid_file",
                )
            return
        if detect_columns(cols, fields) is not None:
            return
        raise InvalidRequest(
            f"File {f.id} has columns [{listed}]; causal_lm needs '{d.text_field}', "
            f"'{d.prompt_field}' + '{d.completion_field}', '{d.messages_field}', alpaca's 'instruction' + "
            "'output', or ShareGPT's 'conversations' (rename them with data.text_field, data.prompt_field, ...).",
            param=param,
            code="invalid_file",
        )
    if d.text_field not in cols:
        raise InvalidRequest(
            f"File {f.id} has no '{d.text_field}' column (columns: {listed}); set data.text_field.",
            param=param,
            code="invalid_file",
        )
    if d.label_field not in cols:
        raise InvalidRequest(
            f"File {f.id} has no '{d.label_field}' column (columns: {listed}); set data.label_field.",
            param=param,
            code="invalid_file",
        )
    label = cols[d.label_field]
    if spec.task == "regression" and not label.get("numeric"):
        raise InvalidRequest(
            f"regression needs a numeric '{d.label_field}' column, but file {f.id} has non-numeric values.",
            param=param,
            code="invalid_file",
        )
    if spec.task == "sequence_classification" and label.get("distinct") is not None and label["distinct"] < 2:
        raise InvalidRequest(
            f"sequence_classification needs at least 2 classes in '{d.label_field}'; file {f.id} has one.",
            param=param,
            code="invalid_file",
        )


def _check_prompt_rows(spec: JobSpec, f: File, cols: dict[str, Any], listed: str, param: str) -> None:
    """Prompt rows (reinforcement): `messages`, and every field the grader reads as `{{item.<field>}}`."""
    messages = spec.data.messages_field
    if messages not in cols:
        raise InvalidRequest(
            f"File {f.id} has columns [{listed}]; method.type={spec.method} needs prompt rows with '{messages}' "
            "(the conversation up to the turn the model writes) and the fields the grader reads.",
            param=param,
            code="invalid_file",
        )
    grader = spec.reinforcement.grader
    if grader is None:
        return
    for path, g in leaves(grader):
        for field, text in templates(g):
            missing = sorted(item_fields(text) - set(cols))
            if missing:
                raise InvalidRequest(
                    f"method.reinforcement.{path}.{field} reads {{{{item.{missing[0]}}}}}, but {param} {f.id} has "
                    f"no '{missing[0]}' column (columns: {listed}).",
                    param=f"method.reinforcement.{path}.{field}",
                    code="invalid_file",
                )


def check_graders(spec: JobSpec, settings: Settings) -> None:
    """What a job's grader needs of this server: python graders turned on, judges it serves in-process."""
    grader = spec.reinforcement.grader
    if grader is None:
        return
    for path, g in leaves(grader):
        if isinstance(g, PythonGrader) and not settings.python_grader_enabled:
            raise InvalidRequest(
                "python graders are turned off on this server (the operator turns them on with "
                "TUNEFORGE_PYTHON_GRADER_ENABLED=true; docs/security.md).",
                param=f"method.reinforcement.{path}",
                code="python_grader_disabled",
            )
    for path, model in judge_models(grader):
        where = f"method.reinforcement.{path}"
        if model.startswith("ft:"):
            continue  # check_judges: it needs the organization
        try:
            resolve_model_dir(settings.models_dir, model)
        except SpecError as exc:  # the resolver's own refusal, named for the grader field
            raise InvalidRequest(f"Judge model {model!r}: {exc.message}", param=where, code="model_not_found") from exc


def check_judges(session: Session, org_id: str, spec: JobSpec) -> None:
    """`ft:` judges: a fine-tuned model of the job's own organization, trained as a chat model (the worker
    loads its base with the adapter merged, training/judge.py). Another organization's, even one shared
    with this one for continued training, is a 400 naming the grader field: a judge's replies would
    let this organization read that model's behaviour on every completion of the job."""
    grader = spec.reinforcement.grader
    if grader is None:
        return
    for path, model in judge_models(grader):
        if not model.startswith("ft:"):
            continue
        where = f"method.reinforcement.{path}"
        try:
            source = continuation.find(session, org_id, model)
        except APIError as exc:
            raise InvalidRequest(
                f"Judge model {model} is not a fine-tuned model of this organization ({exc.message}).",
                param=where,
                code="model_not_found",
            ) from exc
        if source.job.organization_id != org_id:
            raise InvalidRequest(
                f"Judge model {model} belongs to another organization; a job's judge must be a base model or "
                "one of this organization's own fine-tuned models.",
                param=where,
                code="model_not_found",
            )
        task = JobSpec.model_validate(source.job.spec).task
        if task != "causal_lm":
            raise InvalidRequest(
                f"Judge model {model} was trained for task {task}; a judge must write text (task causal_lm).",
                param=where,
                code="model_not_supported",
            )


def check_caps(spec: JobSpec, settings: Settings) -> None:
    """The operator's caps (TUNEFORGE_MAX_*): what one job may ask of a GPU; its grader's needs; its trackers."""
    check_graders(spec, settings)
    check_integrations(spec, settings)
    t = spec.training
    caps = (
        ("training.max_steps", t.max_steps, settings.max_steps, "TUNEFORGE_MAX_STEPS"),
        ("training.epochs", t.epochs, settings.max_epochs, "TUNEFORGE_MAX_EPOCHS"),
        ("training.max_seq_length", t.max_seq_length, settings.max_seq_length, "TUNEFORGE_MAX_SEQ_LENGTH"),
        ("training.batch_size", t.batch_size, settings.max_batch_size, "TUNEFORGE_MAX_BATCH_SIZE"),
        ("lora.r", spec.lora.r, settings.max_lora_r, "TUNEFORGE_MAX_LORA_R"),
    )
    for param, value, cap, env in caps:
        if value is not None and value > cap:
            raise InvalidRequest(
                f"{param}={value} is over this server's limit of {cap} (set by the operator with {env}).",
                param=param,
                code="over_limit",
            )


def check_gpu_memory(spec: JobSpec, config: dict[str, Any], settings: Settings) -> None:
    """Refuse at submission a job that cannot fit the largest worker GPU, rather than let it OOM
    after waiting in the queue."""
    if settings.worker_gpu_memory_gb is None:
        return
    est = estimate(config, spec, settings.devices_per_job)  # per device: each rank holds a full copy
    if est is None:
        return  # a config the estimator cannot read is let through; the worker reports an OOM clearly
    needed = est.total / GB + RUNTIME_ALLOWANCE_GB
    if needed > settings.worker_gpu_memory_gb:
        raise InvalidRequest(
            f"This job needs an estimated {est.describe()} plus {RUNTIME_ALLOWANCE_GB:.0f} GB of CUDA runtime, "
            f"more than the largest worker GPU ({settings.worker_gpu_memory_gb:g} GB). Lower training.batch_size "
            "or training.max_seq_length, set training.gradient_checkpointing=true, or use 4-bit quantization.",
            param="training.batch_size",
            code="insufficient_gpu_memory",
        )


# Counted against TUNEFORGE_MAX_QUEUED_JOBS_PER_ORG: jobs waiting for a worker, and paused ones, which
# hold a checkpoint and go back to `queued` when resumed (pausing jobs to make room was a way around
# the cap: 24 jobs under a cap of 5).
QUEUE_CAPPED: tuple[JobStatus, ...] = (*WAITING, JobStatus.PAUSED)


def check_queue_room(session: Session, settings: Settings, org_id: str) -> None:
    """Per-organization fairness. Running jobs are capped where workers claim them (a job over the
    running cap waits in `queued`); the queue itself (waiting and paused jobs) is capped here. Atomic
    only after `auth.repository.lock_org` in the same transaction (service.create takes it)."""
    queued = repository.count_by_status(session, org_id, QUEUE_CAPPED)
    if queued >= settings.max_queued_jobs_per_org:
        raise TooManyRequests(
            f"Your organization already has {queued} queued jobs (paused ones count), the limit "
            f"(TUNEFORGE_MAX_QUEUED_JOBS_PER_ORG={settings.max_queued_jobs_per_org}). "
            "Retry when some have started, or cancel some.",
            retry_after=RETRY_AFTER_SECONDS,
            code="queued_jobs_limit",
        )

"""`tuneforge jobs create|list|get|cancel|pause|resume|watch|logs|download`."""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn

from tuneforge.app.client import output
from tuneforge.app.client.errors import CliError, ExitCode
from tuneforge.app.client.http import Api, sse_json
from tuneforge.app.client.spec_input import build_body
from tuneforge.app.core.schemas import ListResponse
from tuneforge.app.jobs.schemas import FineTuningJob, JobEventObject, MetricsSeries
from tuneforge.contract.status import TERMINAL, JobStatus

JOBS = "/v1/fine_tuning/jobs"
OUTCOME_EXIT = {JobStatus.SUCCEEDED: ExitCode.OK, JobStatus.FAILED: ExitCode.JOB_FAILED}


def exit_code_of(job: FineTuningJob) -> ExitCode:
    """0 succeeded, 6 failed, 7 cancelled."""
    return OUTCOME_EXIT.get(job.status, ExitCode.JOB_CANCELLED)


def get_job(api: Api, job_id: str) -> FineTuningJob:
    return FineTuningJob.model_validate(api.get(f"{JOBS}/{job_id}"))


def show_job(job: FineTuningJob) -> None:
    p = job.progress
    step = f"{p.step}/{p.total_steps}" if p.total_steps else str(p.step)
    rows = [
        ("id", job.id),
        ("status", job.detailed_status.value),
        ("model", job.model),
        ("training file", job.training_file),
        ("step", f"{step}" + (f"  ({p.percentage:.0f}%)" if p.percentage is not None else "")),
        ("elapsed / ETA", f"{output.duration(p.elapsed_s)} / {output.duration(p.remaining_s)}"),
        ("created", output.when(job.created_at)),
        ("finished", output.when(job.finished_at)),
        ("trained tokens", job.trained_tokens),
        ("fine-tuned model", job.fine_tuned_model),
    ]
    if job.error:
        rows.append(
            ("error", f"{job.error.code}: {job.error.message}" + (f" ({job.error.param})" if job.error.param else ""))
        )
    for key, value in (job.final_metrics or {}).items():
        rows.append((f"final {key}", value))
    output.table(["field", "value"], rows)


def cmd_create(api: Api, args: argparse.Namespace) -> int:
    body = build_body(
        model=args.model,
        training_file=args.file,
        spec=args.spec,
        sets=args.set or [],
        validation_file=args.validation_file,
        suffix=args.suffix,
        seed=args.seed,
        metadata=args.metadata,
    )
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    job = FineTuningJob.model_validate(api.post(JOBS, json=body, headers=headers))
    if args.watch:
        if not args.json:
            output.err.print(f"created {job.id} ({job.status.value})")
        return watch(api, job.id, as_json=args.json)
    if args.json:
        output.print_json(job.model_dump(mode="json"))
    else:
        output.err.print(f"created {job.id} ({job.status.value}); follow it with: tuneforge jobs watch {job.id}")
        print(job.id)
    return 0


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.model:
        params["model"] = args.model
    if args.after:
        params["after"] = args.after
    page = ListResponse[FineTuningJob].model_validate(api.get(JOBS, params=params))
    if args.json:
        output.print_json(page.model_dump(mode="json"))
        return 0
    rows = []
    for j in page.data:
        p = j.progress
        pct = f"{p.percentage:.0f}%" if p.percentage is not None else "-"
        rows.append(
            [
                j.id,
                j.detailed_status.value,
                j.model,
                f"{p.step}/{p.total_steps or '?'}",
                pct,
                output.when(j.created_at),
                j.trained_tokens,
            ]
        )
    output.table(["id", "status", "model", "step", "progress", "created", "tokens"], rows)
    if page.has_more and page.last_id:
        output.err.print(f"(more: --after {page.last_id})")
    return 0


def cmd_get(api: Api, args: argparse.Namespace) -> int:
    job = get_job(api, args.job_id)
    if args.json:
        output.print_json(job.model_dump(mode="json"))
    else:
        show_job(job)
    return 0


def _action(api: Api, args: argparse.Namespace, action: str) -> int:
    try:
        data = api.post(f"{JOBS}/{args.job_id}/{action}")
    except CliError as exc:
        if exc.code == ExitCode.NOT_FOUND and action in ("pause", "resume"):
            get_job(api, args.job_id)  # raises the job's own 404 when the job is what is missing
            raise CliError(
                f"this server has no {action} endpoint (POST {JOBS}/{{id}}/{action}); upgrade it", ExitCode.REFUSED
            ) from exc
        raise
    job = FineTuningJob.model_validate(data)
    if args.json:
        output.print_json(job.model_dump(mode="json"))
    else:
        output.out.print(f"{job.id} {job.detailed_status.value}")
    return 0


def cmd_cancel(api: Api, args: argparse.Namespace) -> int:
    return _action(api, args, "cancel")


def cmd_pause(api: Api, args: argparse.Namespace) -> int:
    return _action(api, args, "pause")


def cmd_resume(api: Api, args: argparse.Namespace) -> int:
    return _action(api, args, "resume")


# ----------------------------------------------------------------------------- watch


class _Watch:
    """What the bar shows: step, ETA, the latest loss and a sparkline of the loss so far."""

    def __init__(self, progress: Progress, job_id: str) -> None:
        self.progress = progress
        self.task = progress.add_task(job_id, total=None, status="queued", loss="", eta="", spark="")
        self.losses: list[float] = []
        self.last_step = -1

    def status(self, status: str, prog: dict[str, Any]) -> None:
        remaining = prog.get("remaining_s")
        self.progress.update(
            self.task,
            total=prog.get("total_steps") or None,
            completed=prog.get("step") or 0,
            status=status,
            eta=f"ETA {output.duration(remaining)}" if remaining is not None else "",
        )

    def points(self, points: list[dict[str, Any]]) -> None:
        for p in points:
            if p.get("loss") is not None and p["step"] > self.last_step:
                self.losses.append(float(p["loss"]))
            self.last_step = max(self.last_step, int(p["step"]))
        if self.losses:
            self.progress.update(self.task, loss=f"loss {self.losses[-1]:.4f}", spark=output.sparkline(self.losses, 30))


def _follow_stream(api: Api, job_id: str, w: _Watch) -> bool:
    """Feed the bar from the SSE stream. True when the job finished, False when the stream ended early."""
    with api.stream("GET", f"{JOBS}/{job_id}/stream", read_timeout=120) as response:
        for event, data in sse_json(response):
            if event == "status":
                w.status(data.get("detailed_status") or data["status"], data.get("progress") or {})
            elif event == "metrics":
                w.points(data.get("points") or [])
            elif event == "done":
                return True
    return False


def _follow_polling(api: Api, job_id: str, w: _Watch, interval: float = 1.0) -> None:
    while True:
        job = get_job(api, job_id)
        w.status(job.detailed_status.value, job.progress.model_dump())
        since = {"since_step": w.last_step} if w.last_step >= 0 else {}
        series = MetricsSeries.model_validate(
            api.get(f"{JOBS}/{job_id}/metrics", params={**since, "max_points": 100_000})
        )
        w.points([p.model_dump() for p in series.data])
        if job.status in TERMINAL:
            return
        time.sleep(interval)


def watch(api: Api, job_id: str, *, as_json: bool) -> int:
    get_job(api, job_id)  # a clear 404 before any bar is drawn
    with Progress(
        TextColumn("{task.description}"),
        TextColumn("{task.fields[status]:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[eta]}"),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[spark]}"),
        console=output.err,
        disable=as_json,
    ) as progress:
        w = _Watch(progress, job_id)
        while True:
            try:
                if _follow_stream(api, job_id, w):
                    break
            except CliError as exc:  # no stream on this server (or it dropped): poll instead
                if exc.code in (ExitCode.AUTH,):
                    raise
                _follow_polling(api, job_id, w)
                break
    job = get_job(api, job_id)
    if as_json:
        output.print_json(job.model_dump(mode="json"))
    else:
        _summary(job, w.losses)
    return exit_code_of(job)


def _summary(job: FineTuningJob, losses: list[float]) -> None:
    colour = {"succeeded": "green", "failed": "red"}.get(job.status.value, "yellow")
    output.out.print(f"job:      {job.id} [{colour}]{job.status.value}[/]")
    if job.error:
        output.out.print(f"error:    {output.escape(job.error.code)}: {output.escape(job.error.message)}")
    if job.trained_tokens:
        output.out.print(f"tokens:   {job.trained_tokens}")
    if losses:
        output.out.print(f"loss:     {output.sparkline(losses, 60)}  {losses[0]:.4f} -> {losses[-1]:.4f}")
    for key, value in (job.final_metrics or {}).items():
        output.out.print(output.escape(f"{key + ':':<9} {value}"))
    if job.fine_tuned_model:
        output.out.print(f"model:    {job.fine_tuned_model}")


def cmd_watch(api: Api, args: argparse.Namespace) -> int:
    return watch(api, args.job_id, as_json=args.json)


# ----------------------------------------------------------------------------- logs


def _all_events(api: Api, job_id: str) -> list[JobEventObject]:
    events: list[JobEventObject] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"after": after} if after else {})}
        page = ListResponse[JobEventObject].model_validate(api.get(f"{JOBS}/{job_id}/events", params=params))
        events.extend(page.data)
        if not page.has_more or not page.last_id:
            break
        after = page.last_id
    return events[::-1]  # the API lists newest first


def _print_event(e: JobEventObject, as_json: bool) -> None:
    if as_json:
        output.print_json(e.model_dump(mode="json"))
        return
    colour = {"warn": "yellow", "error": "red"}.get(e.level, "default")
    output.out.print(f"{output.when(e.created_at)}  [{colour}]{e.level:<5}[/]  {output.escape(e.message)}", markup=True)


def _stream_events(api: Api, job_id: str) -> Iterator[JobEventObject]:
    with api.stream("GET", f"{JOBS}/{job_id}/stream", read_timeout=120) as response:
        for event, data in sse_json(response):
            if event == "event":
                yield JobEventObject.model_validate(data)
            elif event == "done":
                return


def cmd_logs(api: Api, args: argparse.Namespace) -> int:
    if not args.follow:
        for e in _all_events(api, args.job_id):
            _print_event(e, args.json)
        return 0
    get_job(api, args.job_id)
    seen: set[str] = set()
    while True:  # the stream replays every event from the start, so a reconnect only skips seen ids
        for e in _stream_events(api, args.job_id):
            if e.id not in seen:
                seen.add(e.id)
                _print_event(e, args.json)
        if get_job(api, args.job_id).status in TERMINAL:
            return 0


# ----------------------------------------------------------------------------- download


def _safe_unpack(archive: Path, dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        tar.extractall(dest, filter="data")  # refuses absolute paths, "..", links out of dest, devices
    return names


def cmd_download(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.checkpoint is not None:
        params["checkpoint"] = args.checkpoint
    if args.format != "peft":
        params["format"] = args.format
    if args.quant is not None:
        params["quant"] = args.quant  # the server says when it is not for this format
    dest = Path(args.output)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "download.tar.gz"
        with (
            api.stream("GET", f"{JOBS}/{args.job_id}/adapter", params=params, read_timeout=300) as response,
            Progress(
                TextColumn("download"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=output.err,
                transient=True,
                disable=args.json,
            ) as progress,
        ):
            length = response.headers.get("content-length")
            task = progress.add_task("download", total=int(length) if length and length.isdigit() else None)
            with archive.open("wb") as fh:
                for chunk in response.iter_bytes(1 << 16):
                    fh.write(chunk)
                    progress.update(task, advance=len(chunk))
        size = archive.stat().st_size
        try:
            names = _safe_unpack(archive, dest)
        except (tarfile.TarError, OSError) as exc:
            raise CliError(f"cannot unpack the archive: {exc}", ExitCode.SERVER) from exc
    top = sorted({n.split("/", 1)[0] for n in names})
    if args.format == "merged" and any(n.endswith("adapter_config.json") for n in names):
        raise CliError(
            "this server sent a PEFT adapter, not a merged model: it has no merged downloads", ExitCode.REFUSED
        )
    paths = [str(dest / t) for t in top]
    if args.json:
        output.print_json({"job_id": args.job_id, "format": args.format, "bytes": size, "paths": paths, "files": names})
    else:
        output.err.print(f"downloaded {output.human_bytes(size)}, unpacked {len(names)} entries")
        for p in paths:
            print(p)
    return 0


# ----------------------------------------------------------------------------- parser


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("jobs", help="create, follow and download fine-tuning jobs on a server")
    js = p.add_subparsers(dest="jobs_cmd", required=True)

    c = js.add_parser("create", parents=[common], help="create a job (validated locally first)")
    c.add_argument("--model", required=True, help="base model (a directory under the server's models root)")
    c.add_argument("--file", required=True, help="training file id (from `tuneforge files upload`)")
    c.add_argument("--validation-file", default=None)
    c.add_argument("--spec", default=None, help="a YAML or JSON file with the body's blocks (training, lora, ...)")
    c.add_argument(
        "--set", action="append", metavar="KEY.PATH=VALUE", help="override one field, e.g. training.learning_rate=1e-4"
    )
    c.add_argument("--suffix", default=None)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--metadata", action="append", metavar="KEY=VALUE")
    c.add_argument("--idempotency-key", default=None)
    c.add_argument("--watch", action="store_true", help="then follow it like `jobs watch`")
    c.set_defaults(client_func=cmd_create)

    ls = js.add_parser("list", parents=[common], help="list jobs, newest first")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--status", choices=[s.value for s in JobStatus])
    ls.add_argument("--model")
    ls.add_argument("--after", help="page on after this job id")
    ls.set_defaults(client_func=cmd_list)

    for name, func, text in (
        ("get", cmd_get, "show one job"),
        ("cancel", cmd_cancel, "cancel a job"),
        ("pause", cmd_pause, "pause a running job (it keeps its checkpoint)"),
        ("resume", cmd_resume, "resume a paused job"),
        ("watch", cmd_watch, "live progress; exit code 0 succeeded, 6 failed, 7 cancelled"),
    ):
        a = js.add_parser(name, parents=[common], help=text)
        a.add_argument("job_id")
        a.set_defaults(client_func=func)

    lg = js.add_parser("logs", parents=[common], help="the job's events, oldest first")
    lg.add_argument("job_id")
    lg.add_argument("-f", "--follow", action="store_true", help="keep following until the job finishes")
    lg.set_defaults(client_func=cmd_logs)

    d = js.add_parser("download", parents=[common], help="download and unpack the adapter")
    d.add_argument("job_id")
    d.add_argument("--checkpoint", type=int, default=None, help="step of an intermediate checkpoint")
    d.add_argument("--format", choices=["peft", "merged", "gguf", "gguf-lora"], default="peft")
    d.add_argument("--quant", choices=["f16", "q8_0", "q4_k_m"], default=None, help="with --format gguf")
    d.add_argument("-o", "--output", default=".", help="directory to unpack into (default: here)")
    d.set_defaults(client_func=cmd_download)

"""`tuneforge`: run the API, a worker, the embedded all-in-one, migrations, the demo, and keys; and the
client commands (files, jobs, chat) that talk to a running server."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from tuneforge.app.core.config import get_settings
from tuneforge.app.core.logging import configure_logging
from tuneforge.app.core.loops import API_LOOPS, LoopName
from tuneforge.app.models import cli as models_cli


def cmd_migrate(_: argparse.Namespace) -> int:
    from tuneforge.app.db.migrate import upgrade

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    print("database is at the latest migration")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneforge.app.core.http_limits import server_options
    from tuneforge.app.main import create_app

    if args.no_reconciler:
        disable_loops(API_LOOPS)
    settings = get_settings()
    uvicorn.run(
        # N processes need an import string; each builds its app (and its loops, whose rounds are
        # conditional updates) from the factory, with the environment this process set.
        "tuneforge.app.main:create_api_app" if args.workers > 1 else create_app(run_loops=True),
        factory=args.workers > 1,
        workers=args.workers if args.workers > 1 else None,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=args.log_level.lower(),
        access_log=args.access_log,
        log_config=None,  # uvicorn's loggers propagate to ours, which carries the request id
        **server_options(),  # header size, count and read-timeout limits (tuneforge/app/core/http_limits.py)
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import torch

    from tuneforge.app.fleet.presence import Presence
    from tuneforge.worker.celery_app import celery_app
    from tuneforge.worker.runner import WORKER_ID

    if args.devices_per_job is not None:
        os.environ["TUNEFORGE_DEVICES_PER_JOB"] = str(args.devices_per_job)
        get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    queues = [q.strip() for q in (args.queue or settings.queue).split(",") if q.strip()]
    role = "inference" if queues == [settings.inference_queue] else "training"
    if torch.cuda.is_available() and torch.cuda.device_count() < settings.devices_per_job:
        print(f"--devices-per-job {settings.devices_per_job}: only {torch.cuda.device_count()} GPUs", file=sys.stderr)
        return 2
    device = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
    per_job = (
        f", {settings.devices_per_job} devices per job" if settings.devices_per_job > 1 and role == "training" else ""
    )
    print(f"tuneforge worker: {role} on {device}{per_job}, queues {queues}", flush=True)
    argv = [
        "worker",
        "--queues", ",".join(queues),
        # One job at a time, in the main process: a GPU holds one training run, and CUDA does not
        # survive fork.
        "--pool", "solo",
        "--concurrency", "1",
        "--loglevel", args.log_level,
        "--hostname", args.hostname or f"tuneforge-{role}@%h",
        "--without-gossip",
        "--without-mingle",
    ]  # fmt: skip
    # Lets the API tell a queue nobody serves (unless TUNEFORGE_DISABLED_LOOPS has `presence`).
    presence = Presence(WORKER_ID, queues) if LoopName.PRESENCE not in settings.disabled_loops else None
    if presence is not None:
        presence.start()
    try:
        celery_app.worker_main(argv)
    finally:
        if presence is not None:
            presence.stop()
    return 0


def _vllm_options(args: argparse.Namespace, model: str, port: int) -> Any:
    from tuneforge.app.inference.vllm.launch import VLLMOptions

    return VLLMOptions(
        model=model,
        host=getattr(args, "vllm_host", "127.0.0.1"),
        port=port,
        max_loras=args.max_loras,
        max_lora_rank=args.max_lora_rank,
        max_model_len=args.max_model_len or None,
        kv_cache_gb=args.kv_cache_gb,
        tool_call_parser=args.tool_call_parser,
        extra=[a for i, a in enumerate(args.vllm_args or []) if not (i == 0 and a == "--")],
    )


def cmd_vllm(args: argparse.Namespace) -> int:
    """vLLM's server for one base under the models root, in the foreground (exec: its signals are its own)."""
    from tuneforge.app.inference.vllm.launch import command

    settings = get_settings()
    argv, env = command(settings, _vllm_options(args, args.model, args.port))
    print(f"tuneforge vllm: {args.model} on http://{args.vllm_host}:{args.port} ({argv[0]})", flush=True)
    os.execve(argv[0], argv, env)
    return 0  # unreachable


def _start_vllm(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """`tuneforge up --inference vllm`: vLLM as a child, and this process's API pointed at it."""
    from tuneforge.app.inference.vllm.launch import command

    if not args.vllm_model:
        raise SystemExit("tuneforge up --inference vllm needs --vllm-model NAME (a base under the models root)")
    settings = get_settings()
    argv, env = command(settings, _vllm_options(args, args.vllm_model, args.vllm_port))
    log_path = settings.data_dir / "vllm.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, preexec_fn=_die_with_parent)
    os.environ["TUNEFORGE_INFERENCE_BACKEND"] = "vllm"
    os.environ["TUNEFORGE_VLLM_URL"] = f"http://127.0.0.1:{args.vllm_port}"
    get_settings.cache_clear()
    print(f"vllm:       pid {proc.pid}, {args.vllm_model} on port {args.vllm_port}, log {log_path}", flush=True)
    return proc


def cmd_up(args: argparse.Namespace) -> int:
    """Everything on one box: migrate, a local key, one worker subprocess, the API in-process."""
    import uvicorn

    from tuneforge.app.core.http_limits import server_options
    from tuneforge.app.local import ensure_local_key
    from tuneforge.app.main import create_app

    settings = get_settings()
    settings.ensure_dirs()
    # vLLM first: it takes the longest to start (its requests answer 503 with Retry-After meanwhile).
    inference = _start_vllm(args) if args.inference == "vllm" else None
    cmd_migrate(args)
    key, created = ensure_local_key(settings)
    print(f"data dir:   {settings.data_dir}")
    print(f"models dir: {settings.models_dir}")
    print(f"API key:    {key}" + ("  (new; saved in the data dir)" if created else ""))
    log_path = settings.data_dir / "worker.log"
    print(f"API:        http://{args.host}:{args.port}/v1")
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-P", "-m", "tuneforge.app.cli", "worker", "--log-level", args.log_level],
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,  # safe: no threads have started in this process yet
        )
    print(f"worker:     pid {worker.pid}, log {log_path}", flush=True)
    if inference is None:
        inference_log = settings.data_dir / "inference-worker.log"
        inference_cmd = ["worker", "--queue", settings.inference_queue, "--log-level", args.log_level]
        with inference_log.open("ab") as log:
            inference = subprocess.Popen(
                [sys.executable, "-P", "-m", "tuneforge.app.cli", *inference_cmd],
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        print(f"inference:  pid {inference.pid}, log {inference_log}", flush=True)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default handler that
    # kills this process on the spot and skips the `finally` below, orphaning the worker.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(
            create_app(run_loops=True),
            host=args.host,
            port=args.port,
            log_level="warning",
            log_config=None,
            **server_options(),
        )
    finally:
        for proc in (inference, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (inference, worker):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


DISABLED_LOOPS_ENV = "TUNEFORGE_DISABLED_LOOPS"


def disable_loops(names: Sequence[LoopName]) -> None:
    """Add loops to TUNEFORGE_DISABLED_LOOPS, for this process and the processes it starts (a flag
    such as `--no-reconciler` is this setting's shorthand)."""
    current = [n.strip() for n in os.environ.get(DISABLED_LOOPS_ENV, "").split(",") if n.strip()]
    os.environ[DISABLED_LOOPS_ENV] = ",".join(dict.fromkeys([*current, *names]))
    get_settings.cache_clear()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """In the worker, before exec: a SIGTERM when `tuneforge up` dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def cmd_demo(args: argparse.Namespace) -> int:
    from tuneforge.app.demo import main as demo_main

    return demo_main(args)


def _key_json(key: Any, org: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "organization": org.name,
        "organization_id": org.id,
        "admin": key.is_admin,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def cmd_keys(args: argparse.Namespace) -> int:
    from tuneforge.app.auth.service import create_key, get_or_create_org, list_keys, revoke_key
    from tuneforge.app.db.engine import session_scope

    with session_scope() as s:
        if args.keys_cmd == "create":
            org = get_or_create_org(s, args.org)
            key, plaintext = create_key(s, org, args.name, admin=args.admin)
            if args.json:
                print(json.dumps({**_key_json(key, org), "key": plaintext}))
            else:
                print(f"{key.id}  org={org.name} ({org.id})  admin={key.is_admin}")
                print(f"key: {plaintext}")
            print("Store it now: only its hash is kept.", file=sys.stderr)
        elif args.keys_cmd == "list":
            for k, o in list_keys(s):
                if args.json:
                    print(json.dumps(_key_json(k, o)))
                    continue
                state = "revoked" if k.revoked_at else "active"
                created = f"{k.created_at:%Y-%m-%d}"
                print(f"{k.id}  {state:7}  org={o.name}  admin={k.is_admin}  name={k.name!r}  created={created}")
        elif args.keys_cmd == "revoke":
            if not revoke_key(s, args.key_id):
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    return 0


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneforge", description="QLoRA fine-tuning jobs behind an OpenAI-compatible API.")
    sub = p.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host", default=None, help="address to bind (default: TUNEFORGE_HOST, else 127.0.0.1)")
    api.add_argument("--port", type=int, default=None, help="port (default: TUNEFORGE_PORT, else 8000)")
    api.add_argument(
        "--no-reconciler",
        action="store_true",
        help="run none of the API's background loops here (reconciler, sweeps, webhooks, uploads); "
        "TUNEFORGE_DISABLED_LOOPS turns them off one by one",
    )
    api.add_argument(
        "--workers", type=_positive, default=1, help="uvicorn processes sharing the port (default 1; ~1 per core)"
    )
    api.add_argument("--log-level", default="INFO")
    api.add_argument("--access-log", action="store_true")
    api.set_defaults(func=cmd_api)

    w = sub.add_parser("worker", help="run a Celery worker: training (the configured queue) or inference")
    w.add_argument("--log-level", default="INFO")
    w.add_argument(
        "--queue",
        default=None,
        help="queues to consume, comma-separated: a GPU class, or `inference` for chat and completions "
        "(default: TUNEFORGE_QUEUE, training)",
    )
    w.add_argument("--hostname", default=None, help="Celery node name (default: tuneforge-<role>@%%h)")
    w.add_argument(
        "--devices-per-job",
        type=int,
        default=None,
        choices=range(1, 65),
        metavar="N",
        help="train each job on N devices as N data-parallel processes (gloo on CPU, NCCL on GPUs)",
    )
    w.set_defaults(func=cmd_worker)

    up = sub.add_parser(
        "up", help="run API + one training and one inference worker on the embedded default (no servers needed)"
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--log-level", default="WARNING")
    up.add_argument(
        "--inference",
        choices=["transformers", "vllm"],
        default="transformers",
        help="who generates for chat/completions: the built-in inference worker, or a vLLM server started "
        "here for --vllm-model (docs/serving.md)",
    )
    up.add_argument("--vllm-model", default=None, help="with --inference vllm: the base vLLM serves")
    up.add_argument("--vllm-port", type=int, default=8100, help="with --inference vllm: vLLM's loopback port")
    _vllm_arguments(up)
    up.set_defaults(func=cmd_up)

    v = sub.add_parser(
        "vllm", help="run vLLM's OpenAI server for a base model, LoRA adapters loadable at runtime (docs/serving.md)"
    )
    v.add_argument("--model", required=True, help="a base model under the models root")
    v.add_argument("--host", default="127.0.0.1", dest="vllm_host", help="address to bind (default loopback)")
    v.add_argument("--port", type=int, default=8100)
    _vllm_arguments(v)
    v.set_defaults(func=cmd_vllm)

    sub.add_parser("migrate", help="alembic upgrade head").set_defaults(func=cmd_migrate)

    d = sub.add_parser(
        "demo",
        help="fine-tune SmolLM2 on SMS spam on the embedded default, over HTTP; accuracy before and after",
    )
    d.add_argument("--port", type=int, default=8765)
    d.add_argument(
        "--tiny", action="store_true", help="a tiny random Llama instead of SmolLM2: the same path in seconds"
    )
    d.add_argument("--train-rows", type=int, default=None, help="training messages (default 320; --tiny 16)")
    d.add_argument("--test-rows", type=int, default=None, help="held-out messages (default 40; --tiny 4)")
    d.add_argument("--steps", type=int, default=None, help="optimizer steps (default 40; --tiny 2)")
    d.add_argument("--out", default=None, help="where to unpack the adapter (default: <data dir>/demo/adapter)")
    d.set_defaults(func=cmd_demo)

    k = sub.add_parser("keys", help="manage API keys")
    ks = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ks.add_parser("create", help="create a key (printed once)")
    kc.add_argument("--org", required=True, help="organization name (created if new)")
    kc.add_argument("--name", default="cli")
    kc.add_argument("--admin", action="store_true", help="may read every organization's jobs")
    kc.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    kl = ks.add_parser("list", help="list keys (never their values)")
    kl.add_argument("--json", action="store_true", help="one JSON object per line")
    kr = ks.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("key_id")
    k.set_defaults(func=cmd_keys)

    # Client commands (files, jobs, chat) talk to a running server over HTTP: docs/cli.md.
    from tuneforge.app.client.commands import add_client_commands, run

    add_client_commands(sub)
    for name in ("files", "jobs", "chat"):
        sub.choices[name].set_defaults(func=run)
    models_cli.add_parser(sub)
    return p


def _vllm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-loras", type=_positive, default=4, help="adapters in one batch (vLLM's --max-loras)")
    p.add_argument("--max-lora-rank", type=_positive, default=64, help="largest lora.r it can load")
    p.add_argument("--max-model-len", type=int, default=2048, help="context length (0: the model's own)")
    p.add_argument(
        "--kv-cache-gb",
        type=_positive,
        default=1,
        help="KV cache GiB on a CPU (VLLM_CPU_KVCACHE_SPACE; GPUs size theirs)",
    )
    p.add_argument("--tool-call-parser", default=None, help="vLLM's parser for the model's tool calls (e.g. hermes)")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: more arguments for vLLM")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_level", "INFO"))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The client command groups, added to `tuneforge`'s parser by tuneforge/app/cli.py, and how one runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.markup import escape

from tuneforge.app.client import chat, files, jobs, output
from tuneforge.app.client.config import resolve
from tuneforge.app.client.errors import CliError, ExitCode
from tuneforge.app.client.http import Api

GROUPS = ("files", "jobs", "chat")


def common_options() -> argparse.ArgumentParser:
    """Options every client command takes (after the command: `tuneforge jobs list --json`)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("server")
    g.add_argument(
        "--api-url",
        default=None,
        help="server root (default: TUNEFORGE_API_URL, the profile, else http://127.0.0.1:8000)",
    )
    g.add_argument("--api-key", default=None, help="bearer key (default: TUNEFORGE_API_KEY, else the profile)")
    g.add_argument(
        "--profile",
        default=None,
        help="a [section] of ~/.config/tuneforge/config.toml (default: TUNEFORGE_PROFILE, else [default])",
    )
    g.add_argument("--timeout", type=float, default=60.0, help="seconds for one HTTP request")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(log_level="WARNING")  # no per-request log lines from httpx
    return p


def add_client_commands(sub: Any) -> None:
    common = common_options()
    files.add_parser(sub, common)
    jobs.add_parser(sub, common)
    chat.add_parser(sub, common)


def run(args: argparse.Namespace) -> int:
    """Run a client command; an error prints the API's message and returns its exit code."""
    try:
        config = resolve(api_url=args.api_url, api_key=args.api_key, profile=args.profile, timeout=args.timeout)
        api = Api(config)
        try:
            return int(args.client_func(api, args))
        finally:
            api.close()
    except CliError as exc:
        if getattr(args, "json", False):
            import json

            error = {"message": exc.message, "param": exc.param, "exit_code": int(exc.code)}
            print(json.dumps({"error": error}), file=sys.stderr)
        else:
            where = f" ({exc.param})" if exc.param else ""
            output.err.print(f"[red]error{escape(where)}:[/] {escape(exc.message)}", markup=True, highlight=False)
        return int(exc.code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return int(ExitCode.OK)

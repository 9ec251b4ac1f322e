"""`tuneforge chat MODEL`: an interactive chat, or one answer with `--prompt`, through
POST /v1/chat/completions (OpenAI's shape, streamed as Server-Sent Events)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tuneforge.app.client import output
from tuneforge.app.client.errors import CliError, ExitCode
from tuneforge.app.client.http import Api, sse_json

PATH = "/v1/chat/completions"


def _body(args: argparse.Namespace, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "messages": messages, "stream": stream}
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        body["temperature"] = args.temperature
    return body


def _no_endpoint(exc: CliError) -> CliError:
    if exc.code == ExitCode.NOT_FOUND and "model" not in exc.message.lower():
        return CliError(f"this server has no {PATH} (it serves fine-tuning only); upgrade it", ExitCode.REFUSED)
    return exc


def complete(api: Api, args: argparse.Namespace, messages: list[dict[str, str]]) -> str:
    """One assistant turn, printed as it streams; returns its text."""
    parts: list[str] = []
    try:
        with api.stream("POST", PATH, json=_body(args, messages, True), read_timeout=300) as response:
            for _event, chunk in sse_json(response):
                if chunk is None:  # data: [DONE]
                    break
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        parts.append(text)
                        sys.stdout.write(text)
                        sys.stdout.flush()
    except CliError as exc:
        raise _no_endpoint(exc) from exc
    sys.stdout.write("\n")
    return "".join(parts)


def cmd_chat(api: Api, args: argparse.Namespace) -> int:
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    if args.prompt is not None:
        messages.append({"role": "user", "content": args.prompt})
        if args.json:
            try:
                output.print_json(api.post(PATH, json=_body(args, messages, False)))
            except CliError as exc:
                raise _no_endpoint(exc) from exc
        else:
            complete(api, args, messages)
        return 0
    if args.json:
        raise CliError("--json needs --prompt (one request, one JSON answer)", ExitCode.USAGE, param="--json")
    output.err.print(f"chatting with {args.model}; an empty line or Ctrl-D ends")
    while True:
        try:
            line = output.err.input("[bold]you>[/] ")
        except EOFError:
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        messages.append({"role": "assistant", "content": complete(api, args, messages)})
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("chat", parents=[common], help="chat with a base or fine-tuned model on a server")
    p.add_argument("model", help="a base model name or a fine-tuned model id (ft:...)")
    p.add_argument("--prompt", default=None, help="ask once, print the answer and exit")
    p.add_argument("--system", default=None, help="a system message")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.set_defaults(client_func=cmd_chat)

"""One HTTP client for every command: the bearer key, the error envelope turned into an exit code,
and Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tuneforge.app.client.config import ClientConfig
from tuneforge.app.client.errors import CliError, ExitCode, exit_code_for_status


def error_of(response: httpx.Response) -> CliError:
    """The API's own message (OpenAI envelope), with the exit code its status maps to."""
    message, param = f"HTTP {response.status_code}", None
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            message, param = str(err["message"]), err.get("param")
        elif isinstance(body, dict) and body.get("detail"):
            message = str(body["detail"])
    except (ValueError, UnicodeDecodeError):
        if response.text.strip():
            message = f"HTTP {response.status_code}: {response.text.strip()[:200]}"
    return CliError(message, exit_code_for_status(response.status_code), param=param)


class Api:
    def __init__(self, config: ClientConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        headers["User-Agent"] = "tuneforge-cli"
        self.http = httpx.Client(base_url=config.api_url, headers=headers, timeout=config.timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.config.api_url}: {exc}", ExitCode.SERVER) from exc
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw).json()

    @contextmanager
    def stream(
        self, method: str, path: str, *, read_timeout: float | None = None, **kw: Any
    ) -> Iterator[httpx.Response]:
        timeout = httpx.Timeout(self.config.timeout, read=read_timeout)
        try:
            with self.http.stream(method, path, timeout=timeout, **kw) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(response)
                yield response
        except httpx.TransportError as exc:
            raise CliError(f"lost the connection to {self.config.api_url}: {exc}", ExitCode.SERVER) from exc


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream; `event` is "message" when a block names none."""
    event = "message"
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def sse_json(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    for event, data in sse_events(response):
        if data == "[DONE]":
            yield event, None
            continue
        try:
            yield event, json.loads(data)
        except ValueError:
            continue

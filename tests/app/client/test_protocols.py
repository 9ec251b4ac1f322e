"""The CLI against the shapes of endpoints this server does not have yet, or paths a live server
rarely takes: OpenAI's streamed chat completions, and `watch` falling back to polling when the
stream is unavailable. The HTTP peer is an httpx transport that answers like those servers."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
import pytest

from tuneforge.app.client import chat, jobs
from tuneforge.app.client.config import ClientConfig
from tuneforge.app.client.errors import CliError, ExitCode
from tuneforge.app.client.http import Api

CONFIG = ClientConfig(api_url="http://tuneforge.test", api_key="tf-test")


def chunk(text: str) -> str:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }
    return f"data: {json.dumps(body)}\n\n"


def test_chat_streams_openai_chunks(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/chat/completions" and request.headers["authorization"] == "Bearer tf-test"
        seen.append(json.loads(request.content))
        sse = chunk("Hel") + ": keep-alive\n\n" + chunk("lo") + "data: [DONE]\n\n"
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    api = Api(CONFIG, transport=httpx.MockTransport(handler))
    args = argparse.Namespace(model="ft:tiny", max_tokens=8, temperature=None)
    assert chat.complete(api, args, [{"role": "user", "content": "hi"}]) == "Hello"
    assert capsys.readouterr().out == "Hello\n"
    assert seen == [
        {"model": "ft:tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 8}
    ]


def test_chat_on_a_server_without_the_endpoint_says_so() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "Not Found", "type": "invalid_request_error"}})

    api = Api(CONFIG, transport=httpx.MockTransport(handler))
    args = argparse.Namespace(model="m", max_tokens=None, temperature=None)
    with pytest.raises(CliError) as exc:
        chat.complete(api, args, [{"role": "user", "content": "hi"}])
    assert exc.value.code == ExitCode.REFUSED and "/v1/chat/completions" in exc.value.message


def job(status: str, step: int) -> dict[str, Any]:
    return {
        "id": "ftjob-1", "created_at": 1, "model": "m", "organization_id": "org", "status": status,
        "hyperparameters": {}, "result_files": [], "seed": 1, "training_file": "file-1", "attempt": 1,
        "progress": {"step": step, "total_steps": 4, "epoch": 0.0, "percentage": None, "elapsed_s": None,
                     "remaining_s": None},
        "spec": {}, "error": {"code": "nan_loss", "message": "loss is NaN"} if status == "failed" else None,
    }  # fmt: skip


def test_watch_polls_when_the_stream_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    polls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/stream"):
            return httpx.Response(404, json={"error": {"message": "Not Found"}})
        if path.endswith("/metrics"):
            points = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
            return httpx.Response(200, json={"job_id": "ftjob-1", "total_points": 2, "data": points})
        polls["n"] += 1
        return httpx.Response(200, json=job("running" if polls["n"] < 3 else "failed", min(polls["n"], 4)))

    api = Api(CONFIG, transport=httpx.MockTransport(handler))
    assert jobs.watch(api, "ftjob-1", as_json=False) == ExitCode.JOB_FAILED
    out = capsys.readouterr().out
    assert "failed" in out and "nan_loss" in out and "2.0000 -> 1.5000" in out

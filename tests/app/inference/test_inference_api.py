"""The API side of inference, in-process on PostgreSQL and Redis: validation before anything is
queued, the 504 when no worker answers, and both reply channels."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import REDIS_URL
from tuneforge.app.core.config import Settings
from tuneforge.app.inference.replies import FileReplies, RedisReplies

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def test_unknown_models_and_fields_are_4xx_before_anything_is_queued(client: httpx.Client, tiny_model: str) -> None:
    cases = [
        ({"model": "no-such-model", **CHAT}, 404, "model"),
        ({"model": "0" * 1000, **CHAT}, 404, "model"),  # found by the fuzzer: a name too long to stat
        ({"model": "ft:tiny-llama:org-x::ftjob-nope", **CHAT}, 404, "model"),
        ({"model": "ft:tiny-llama:org-x::ftjob-nope:ckpt-step-3", **CHAT}, 404, "model"),
        ({"model": tiny_model, **CHAT, "max_tokens": 10**6}, 400, "max_tokens"),
        ({"model": tiny_model, **CHAT, "max_completion_tokens": 10**6}, 400, "max_completion_tokens"),
        ({"model": tiny_model, **CHAT, "temperature": 3}, 400, "temperature"),
        ({"model": tiny_model, **CHAT, "n": 2}, 400, "n"),
        ({"model": tiny_model, **CHAT, "tools": []}, 400, "tools"),
        ({"model": tiny_model, **CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"model": tiny_model, "messages": []}, 400, "messages"),
        ({"model": tiny_model, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ]
    for body, status, param in cases:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.text)
    r = client.post("/v1/completions", json={"model": tiny_model, "prompt": ["a", "b"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_no_worker_in_time_is_a_clear_504(
    client: httpx.Client, settings: Settings, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A queue no worker consumes: the request waits out its deadline, then answers 504.
    monkeypatch.setattr(settings, "inference_queue", "inference-nobody")
    monkeypatch.setattr(settings, "inference_timeout_seconds", 1.0)
    t0 = time.monotonic()
    r = client.post("/v1/chat/completions", json={"model": tiny_model, **CHAT})
    assert r.status_code == 504, r.text
    assert (
        r.json()["error"]["code"] == "timeout" and "TUNEFORGE_INFERENCE_TIMEOUT_SECONDS" in r.json()["error"]["message"]
    )
    assert time.monotonic() - t0 < 10
    r = client.post("/v1/completions", json={"model": tiny_model, "prompt": "x", "stream": True})
    assert r.status_code == 504, r.text


@pytest.mark.parametrize("kind", ["redis", "files"])
def test_reply_channels_deliver_in_order_and_honour_cancel(kind: str, tmp_path: Path) -> None:
    channel = RedisReplies(REDIS_URL) if kind == "redis" else FileReplies(tmp_path / "replies")
    rid = f"chatcmpl-test{kind}0001"
    assert channel.pop(rid, 0.05) is None

    def produce() -> None:
        for i in range(3):
            time.sleep(0.05)
            channel.push(rid, {"type": "delta", "text": str(i)})

    thread = threading.Thread(target=produce)
    thread.start()
    got = [channel.pop(rid, 5) for _ in range(3)]
    thread.join()
    assert [e["text"] for e in got if e] == ["0", "1", "2"]
    assert not channel.cancelled(rid)
    channel.cancel(rid)
    assert channel.cancelled(rid)
    channel.push(rid, {"type": "done"})
    channel.close(rid)
    assert channel.pop(rid, 0.05) is None  # closing drops what was left

"""The API's awaited end of both reply channels, against what the worker's synchronous side writes:
events in order, a wait that yields the loop to other work, cancel seen by the worker, close."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import REDIS_URL
from tuneforge.app.inference.replies import FileReplies, RedisReplies, ReplyChannel
from tuneforge.app.inference.reply_reader import FileReplyReader, RedisReplyReader, ReplyReader


@pytest.mark.parametrize("kind", ["redis", "files"])
def test_an_awaited_reply_leaves_the_loop_free(kind: str, tmp_path: Path) -> None:
    worker: ReplyChannel = RedisReplies(REDIS_URL) if kind == "redis" else FileReplies(tmp_path / "replies")
    reader: ReplyReader = RedisReplyReader(REDIS_URL) if kind == "redis" else FileReplyReader(tmp_path / "replies")
    rid = f"chatcmpl-reader{kind}01"

    def produce() -> None:
        for i in range(3):
            time.sleep(0.2)
            worker.push(rid, {"type": "delta", "text": str(i)})

    async def scenario() -> None:
        assert await reader.pop(rid, 0.05) is None
        ticks = 0

        async def ticker() -> None:  # other requests' work, which a blocking wait would stall
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        thread = threading.Thread(target=produce)
        thread.start()
        got = [await reader.pop(rid, 5) for _ in range(3)]
        thread.join()
        tick_task.cancel()
        assert [e["text"] for e in got if e] == ["0", "1", "2"]
        assert ticks >= 30, ticks  # ~0.6 s of waiting: the loop ran on all along
        assert not worker.cancelled(rid)
        await reader.cancel(rid)
        assert worker.cancelled(rid)  # the worker stops between tokens
        worker.push(rid, {"type": "done"})
        await reader.close(rid)
        assert await reader.pop(rid, 0.05) is None  # closing dropped what was left

    asyncio.run(scenario())

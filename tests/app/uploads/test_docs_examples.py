"""The two examples of docs/api.md's "Uploads" section, run as written against the live API (the
Python one with the SDK, the shell one with curl), with only the server, key and model substituted."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from openai import OpenAI

from tests.app.uploads.common import chat_jsonl
from tests.helpers import ROOT, make_key


def examples() -> dict[str, str]:
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## Uploads (large files, in parts)", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S))


def test_the_sdk_example(live_api: str, tiny_model: str, tmp_path: Path, monkeypatch: Any) -> None:
    code = examples()["python"]
    code = code.replace('"http://127.0.0.1:8000/v1"', f'"{live_api}/v1"').replace('"tf-..."', repr(make_key("docs-up")))
    code = code.replace('"my-base-model"', repr(tiny_model))
    (tmp_path / "train.jsonl").write_bytes(chat_jsonl(200_000))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/api.md", "exec"), scope)
    assert scope["upload"].status == "completed" and scope["job"].status == "queued"
    client: OpenAI = scope["client"]
    client.fine_tuning.jobs.cancel(scope["job"].id)


def test_the_curl_example(live_api: str, tmp_path: Path) -> None:
    data = chat_jsonl(300_000)
    (tmp_path / "train.jsonl").write_bytes(data)
    script = examples()["bash"].replace("split -b 64M", "split -b 100K")  # several parts of a small file
    env = {**os.environ, "URL": f"{live_api}/v1", "KEY": make_key("docs-up")}
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    upload = json.loads(out.stdout)
    assert upload["status"] == "completed" and upload["file"]["bytes"] == len(data)
    assert len(list(tmp_path.glob("part.*"))) == 3

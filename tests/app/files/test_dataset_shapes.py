"""Upload validation of every data shape: the detected shape is reported, and each bad row is a 400
naming its line and field. Jobs naming `data.format` are checked against the recorded columns."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers import alpaca_row, sharegpt_row, upload_jsonl, weather_chat


def post(client: httpx.Client, rows: list[dict[str, Any]]) -> httpx.Response:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    return client.post("/v1/files", files={"file": ("d.jsonl", body)}, data={"purpose": "fine-tune"})


@pytest.mark.parametrize(
    ("row", "shape"),
    [
        (weather_chat(), "messages"),
        (alpaca_row(), "alpaca"),
        (sharegpt_row(), "sharegpt"),
        ({"prompt": "a", "completion": "b"}, "prompt_completion"),
        ({"text": "a"}, "text"),
    ],
)
def test_detected_format_is_reported(client: httpx.Client, row: dict[str, Any], shape: str) -> None:
    f = upload_jsonl(client, [row, row])
    assert f["data_format"] == shape
    assert client.get(f"/v1/files/{f['id']}").json()["data_format"] == shape


def _weight(w: Any) -> dict[str, Any]:
    row = weather_chat()
    row["messages"][5]["weight"] = w
    return row


def _orphan_tool() -> dict[str, Any]:
    row = weather_chat()
    row["messages"][4]["tool_call_id"] = "call_nobody"
    return row


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_weight(0.5), "line 2: messages[5].weight must be 0 or 1, not 0.5"),
        (_weight("1"), "line 2: messages[5].weight must be 0 or 1"),
        (_orphan_tool(), "line 2: messages[4].tool_call_id 'call_nobody' matches no earlier assistant tool call"),
        ({**alpaca_row(), "output": ""}, "line 2: `output` is empty"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, "line 2: `conversations` has no assistant turn"),
    ],
)
def test_bad_rows_are_400_naming_the_line(client: httpx.Client, bad: dict[str, Any], message: str) -> None:
    r = post(client, [weather_chat(), bad, weather_chat()])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_file" and err["param"] == "file"
    assert message in err["message"], err["message"]


def test_named_format_must_match_the_columns(client: httpx.Client, tiny_model: str) -> None:
    text_file = upload_jsonl(client, [{"text": "a"}])["id"]
    body = {"model": tiny_model, "training_file": text_file, "data": {"format": "alpaca"}}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "data.format" and "detected: text" in err["message"]
    alpaca_file = upload_jsonl(client, [alpaca_row()])["id"]
    r = client.post("/v1/fine_tuning/jobs", json={**body, "training_file": alpaca_file, "training": {"max_steps": 1}})
    assert r.status_code == 200, r.text
    client.post(f"/v1/fine_tuning/jobs/{r.json()['id']}/cancel")

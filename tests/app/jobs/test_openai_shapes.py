"""OpenAI's shapes without a server: no null where its document has a type, events typed message|metrics."""

from __future__ import annotations

import datetime as dt
import json

from tuneforge.app.core.schemas import ListResponse
from tuneforge.app.db.models import JobEvent
from tuneforge.app.files.schemas import FileList
from tuneforge.app.jobs.schemas import CheckpointMetrics, JobEventObject

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_unset_optional_fields_are_left_out() -> None:
    assert CheckpointMetrics(step=2, train_loss=1.5).model_dump(mode="json") == {"step": 2.0, "train_loss": 1.5}
    event = JobEventObject.of(JobEvent(id="ftevent-1", level="info", type="message", message="hi", created_at=NOW))
    assert "data" not in json.loads(event.model_dump_json())
    assert ListResponse[int].page([], 10).model_dump() == {"object": "list", "data": [], "has_more": False}
    # OpenAI's file list requires first_id/last_id as strings.
    assert FileList.page([], 10).model_dump(include={"first_id", "last_id"}) == {"first_id": "", "last_id": ""}


def test_a_samples_event_stored_before_goes_out_as_a_message() -> None:
    row = JobEvent(id="ftevent-2", level="info", type="samples", message="m", data={"step": 2, "count": 1})
    row.created_at = NOW
    event = JobEventObject.of(row)
    assert (event.type, event.data) == ("message", {"kind": "samples", "step": 2, "count": 1})

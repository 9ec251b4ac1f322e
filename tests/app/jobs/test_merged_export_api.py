"""`?format=merged` on the adapter route: what is refused, before any model is loaded."""

from __future__ import annotations

import httpx

from tests.helpers import upload_jsonl


def test_merged_export_of_a_classification_job_says_what_is_supported(client: httpx.Client, tiny_model: str) -> None:
    rows = [{"text": f"message {i}", "label": "spam" if i % 2 else "ham"} for i in range(20)]
    file = upload_jsonl(client, rows, name="cls.jsonl")
    r = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": tiny_model, "training_file": file["id"], "task": "sequence_classification"},
    )
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    r = client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter", params={"format": "merged"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "format" and err["code"] == "merge_not_supported"
    assert "causal_lm" in err["message"] and "format=peft" in err["message"]
    r = client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter", params={"format": "onnx"})
    assert r.status_code == 400 and "format" in r.text
    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")

"""A hyperparameter sweep with the openai SDK: sweeps are a Tuneforge extension, so the SDK's generic
`post`/`get` carry them; the trials are ordinary fine-tuning jobs.

    TUNEFORGE_URL=http://127.0.0.1:8000/v1 TUNEFORGE_API_KEY=tf-... \\
        python examples/sweep_quickstart.py data.jsonl MODEL_NAME
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import httpx
from openai import OpenAI

client = OpenAI(base_url=os.environ["TUNEFORGE_URL"], api_key=os.environ["TUNEFORGE_API_KEY"])
dataset, model = sys.argv[1], sys.argv[2]
Obj = dict[str, Any]

with open(dataset, "rb") as fh:
    training_file = client.files.create(file=fh, purpose="fine-tune")

sweep = client.post(
    "/fine_tuning/sweeps",
    cast_to=httpx.Response,
    body={
        "model": model,
        "training_file": training_file.id,
        "seed": 7,
        "training": {"max_steps": 6, "batch_size": 8},
        "lora": {"alpha": 16},
        "search_space": {
            "training.learning_rate": {"log_uniform": [1e-4, 3e-2]},
            "lora.r": {"values": [4, 8]},
        },
        "strategy": "random",
        "objective": {"metric": "eval_loss", "direction": "minimize"},
        "max_trials": 3,
        "max_parallel": 2,
        "pruner": "median",
    },
).json()
print("sweep:", sweep["id"], sweep["status"])

while sweep["status"] == "running":
    time.sleep(2)
    sweep = client.get(f"/fine_tuning/sweeps/{sweep['id']}", cast_to=httpx.Response).json()
print("status:", sweep["status"], sweep["trial_counts"])

trials: list[Obj] = client.get(f"/fine_tuning/sweeps/{sweep['id']}/trials", cast_to=httpx.Response).json()["data"]
for t in trials:
    print(f"trial {t['number']}: {t['status']:<10} pruned={t['pruned']} value={t['value']} params={t['params']}")
best = sweep["best_trial"]
print("best:", best["job_id"], best["value"], best["params"])
# Every trial is a job: the jobs API lists them by metadata.
jobs = client.fine_tuning.jobs.list(metadata={"sweep_id": sweep["id"]})
print("jobs in the sweep:", len(jobs.data))

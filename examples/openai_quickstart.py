"""Drive Tuneforge with the official openai SDK.

    TUNEFORGE_URL=http://127.0.0.1:8000/v1 TUNEFORGE_API_KEY=tf-... \\
        python examples/openai_quickstart.py data.jsonl MODEL_NAME

MODEL_NAME is a directory under the server's models root (TUNEFORGE_MODELS_DIR).
"""

from __future__ import annotations

import os
import sys
import time

from openai import OpenAI

client = OpenAI(base_url=os.environ["TUNEFORGE_URL"], api_key=os.environ["TUNEFORGE_API_KEY"])
dataset, model = sys.argv[1], sys.argv[2]

with open(dataset, "rb") as fh:
    training_file = client.files.create(file=fh, purpose="fine-tune")
print("file:", training_file.id, training_file.status)

job = client.fine_tuning.jobs.create(
    model=model,
    training_file=training_file.id,
    suffix="quickstart",
    method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8}}},
    # Tuneforge's QLoRA settings travel in extra_body.
    extra_body={
        "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True},
        "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
        "training": {"max_steps": 10, "learning_rate": 1e-2, "save_every": 5},
    },
)
print("job:", job.id, job.status)

while job.status not in ("succeeded", "failed", "cancelled"):
    time.sleep(1)
    job = client.fine_tuning.jobs.retrieve(job.id)
print("status:", job.status, "| model:", job.fine_tuned_model, "| tokens:", job.trained_tokens)

for event in reversed(client.fine_tuning.jobs.list_events(job.id, limit=5).data):
    print("event:", event.message)
for ckpt in client.fine_tuning.jobs.checkpoints.list(job.id).data:
    print("checkpoint: step", ckpt.step_number, "train_loss", ckpt.metrics.train_loss)
sys.exit(0 if job.status == "succeeded" else 1)

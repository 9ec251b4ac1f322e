#!/usr/bin/env bash
# Upload, create, poll and download with curl alone.
#   TUNEFORGE_URL=http://127.0.0.1:8000/v1 TUNEFORGE_API_KEY=tf-... bash examples/curl_quickstart.sh data.jsonl MODEL_NAME
set -euo pipefail
URL=${TUNEFORGE_URL:?}; KEY=${TUNEFORGE_API_KEY:?}; DATA=$1; MODEL=$2
auth=(-H "Authorization: Bearer $KEY")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

FILE_ID=$(curl -sf "${auth[@]}" -F purpose=fine-tune -F "file=@$DATA" "$URL/files" | field "['id']")
echo "file: $FILE_ID"

JOB_ID=$(curl -sf "${auth[@]}" -H "Content-Type: application/json" "$URL/fine_tuning/jobs" -d @- <<JSON | field "['id']"
{"model": "$MODEL", "training_file": "$FILE_ID",
 "quantization": {"bits": 4, "quant_type": "nf4"},
 "lora": {"r": 8, "alpha": 16},
 "training": {"max_steps": 6, "batch_size": 8, "learning_rate": 0.01}}
JSON
)
echo "job: $JOB_ID"

while :; do
  STATUS=$(curl -sf "${auth[@]}" "$URL/fine_tuning/jobs/$JOB_ID" | field "['status']")
  case $STATUS in succeeded|failed|cancelled) break ;; esac
  sleep 1
done
echo "status: $STATUS"

curl -sf "${auth[@]}" "$URL/fine_tuning/jobs/$JOB_ID/metrics?max_points=3" | field "['data']"
curl -sf "${auth[@]}" -o adapter.tar.gz "$URL/fine_tuning/jobs/$JOB_ID/adapter"
tar -tzf adapter.tar.gz
[ "$STATUS" = succeeded ]

#!/usr/bin/env bash
# A grid sweep with curl: create, poll, read the trials and the best one, download its adapter.
#   TUNEFORGE_URL=http://127.0.0.1:8000/v1 TUNEFORGE_API_KEY=tf-... bash examples/sweep_curl.sh data.jsonl MODEL_NAME
set -euo pipefail
URL=${TUNEFORGE_URL:?}; KEY=${TUNEFORGE_API_KEY:?}; DATA=$1; MODEL=$2
auth=(-H "Authorization: Bearer $KEY")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

FILE_ID=$(curl -sf "${auth[@]}" -F purpose=fine-tune -F "file=@$DATA" "$URL/files" | field "['id']")

SWEEP_ID=$(curl -sf "${auth[@]}" -H "Content-Type: application/json" "$URL/fine_tuning/sweeps" -d @- <<JSON | field "['id']"
{"model": "$MODEL", "training_file": "$FILE_ID", "seed": 3,
 "training": {"max_steps": 6, "batch_size": 8},
 "search_space": {"training.learning_rate": {"values": [0.001, 0.01]}},
 "strategy": "grid", "objective": {"metric": "eval_loss"}, "max_parallel": 2}
JSON
)
echo "sweep: $SWEEP_ID"

while :; do
  STATUS=$(curl -sf "${auth[@]}" "$URL/fine_tuning/sweeps/$SWEEP_ID" | field "['status']")
  [ "$STATUS" != running ] && break
  sleep 2
done
echo "status: $STATUS"

curl -sf "${auth[@]}" "$URL/fine_tuning/sweeps/$SWEEP_ID/trials" | field "['data']"
BEST=$(curl -sf "${auth[@]}" "$URL/fine_tuning/sweeps/$SWEEP_ID" | field "['best_trial']['job_id']")
echo "best: $BEST"
curl -sf "${auth[@]}" -o best.tar.gz "$URL/fine_tuning/jobs/$BEST/adapter"
tar -tzf best.tar.gz
[ "$STATUS" = succeeded ]

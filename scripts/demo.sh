#!/usr/bin/env bash
# The first command: install, then run the demo on the embedded default (no servers needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/tuneforge demo "$@"

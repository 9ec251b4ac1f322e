#!/usr/bin/env bash
# The test command: install, make sure PostgreSQL and Redis run, lint, type-check, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# The test command: install, make sure PostgreSQL and Redis run, lint (ruff; ESLint for the dashboard),
# type-check, then the whole suite.
#
# By default the suite runs in one process. TUNEFORGE_TEST_WORKERS=N (N > 1) runs it in N pytest-xdist
# workers, one test file per worker at a time, each with its own database, data dir and Redis database
# (tests/helpers.py), then the tests marked `serial` (a PostgreSQL restart) alone. On 2 cores one process
# is faster: most tests start their own API and worker processes, which train with every core, so two
# at once oversubscribe the machine (measured: docs/architecture.md, "The test suite").
# With arguments (`scripts/test.sh tests/app -k jobs`), pytest runs them as given, in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# vLLM's venv for tests/app/inference/test_vllm_backend.py (a no-op once built; pip's cache keeps its wheels)
bash scripts/vllm_env.sh
bash scripts/services.sh
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
# the dashboard's ES modules: ESLint's recommended rules, lines up to 120, one statement a line
scripts/jslint/node_modules/.bin/eslint --config scripts/jslint/eslint.config.js tuneforge/app/static/ui
.venv/bin/mypy
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
workers="${TUNEFORGE_TEST_WORKERS:-1}"
if [ "$workers" -le 1 ]; then
  exec .venv/bin/python -m pytest -q --durations=25
fi
.venv/bin/python -m pytest -q -n "$workers" --dist loadfile -m "not serial" --durations=25
exec .venv/bin/python -m pytest -q -m serial --durations=10

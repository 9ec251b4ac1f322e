#!/usr/bin/env bash
# The test command: install, make sure PostgreSQL and Redis run, lint, type-check, then the whole suite.
#
# The suite runs in two pytest-xdist workers (TUNEFORGE_TEST_WORKERS, default 2), one test file per
# worker at a time: most tests wait on real processes (a worker training, a browser rendering), so
# two at once fill two cores. Each worker has its own database, data dir and Redis database
# (tests/helpers.py). Tests marked `serial` (a PostgreSQL restart) run alone afterwards.
# With arguments (`scripts/test.sh tests/app -k jobs`), pytest runs them as given, in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
.venv/bin/python -m pytest -q -n "${TUNEFORGE_TEST_WORKERS:-2}" --dist loadfile -m "not serial"
exec .venv/bin/python -m pytest -q -m serial

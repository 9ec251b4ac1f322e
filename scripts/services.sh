#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, trust auth for `postgres`) and Redis (127.0.0.1:6379) answer:
# use them if running, start them if installed, install them (Debian/Ubuntu) if missing.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_ready=
apt_install() {
  if [ -z "$apt_ready" ]; then as_root apt-get update -qq; apt_ready=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

if ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "services: installing PostgreSQL"
    apt_install postgresql
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  conf=/etc/postgresql/$ver/main
  # Trust local TCP connections for the test suite (this is a throwaway CI/dev database).
  if ! grep -q "tuneforge-tests" "$conf/pg_hba.conf"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust # tuneforge-tests' "$conf/pg_hba.conf"
  fi
  echo "services: starting PostgreSQL $ver"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || as_root pg_ctlcluster "$ver" main start
  for _ in $(seq 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "services: PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }

if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "services: installing Redis"
    apt_install redis-server
  fi
  echo "services: starting Redis"
  mkdir -p /tmp/tuneforge-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/tuneforge-redis
  for _ in $(seq 30); do redis_up && break; sleep 0.5; done
fi
redis_up || { echo "services: Redis is not answering on 127.0.0.1:6379" >&2; exit 1; }
echo "services: PostgreSQL and Redis are up"

# The dashboard's browser tests (tests/app/test_ui.py) drive Debian's Chromium through Selenium, offline.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "services: installing chromium + chromium-driver for the browser tests"
  apt_install chromium chromium-driver
fi

# The fairness test (tests/app/test_fairness.py) times the quiet tenant's reads with wrk, a load generator
# faster than the server, as bench.fairness does.
if ! command -v wrk >/dev/null 2>&1; then
  echo "services: installing wrk for the fairness test"
  apt_install wrk
fi

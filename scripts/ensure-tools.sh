#!/usr/bin/env bash
# System tools the test suite drives: docker-compose (to check the compose file) and
# Chromium (browser tests). Installed with apt when run as root on Debian/Ubuntu;
# otherwise says what to install and fails.
set -euo pipefail
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ -n "${FAMA_BROWSER_TESTS:-1}" ] && [ "${FAMA_BROWSER_TESTS:-1}" != 0 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool checks deploy/prometheus/ (tests/ops)
# PostgreSQL: a server named by TEST_POSTGRES_URL, or one on the default port, or binaries the
# fixtures can start (initdb + pg_ctl).
if [ -z "${TEST_POSTGRES_URL:-}" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null \
   && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} with apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "The tests need: ${need[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${need[*]})." >&2
  exit 1
fi

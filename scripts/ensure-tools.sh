#!/usr/bin/env bash
# System tools that three groups of tests drive: docker-compose (tests/test_deploy.py checks the
# compose file), Chromium (tests/browser) and promtool (tests/ops checks the alert rules). Redis and PostgreSQL are not needed here: the tests
# find or start them, down to the servers `make install` puts in the virtual environment
# (tests/support/servers.py). As root with apt-get (CI) the tools are installed; otherwise this
# says exactly what to install and the run goes on: the tests that need a missing tool fail
# saying so (they never skip).
set -euo pipefail
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ -n "${FAMA_BROWSER_TESTS:-1}" ] && [ "${FAMA_BROWSER_TESTS:-1}" != 0 ] && [ -z "${CHROMIUM:-}" ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
fi
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool checks deploy/prometheus/ (tests/ops)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} with apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  exit 0
fi
{
  echo "Not installed: ${need[*]}. The tests that drive them will fail until you install them:"
  for tool in "${need[@]}"; do
    case $tool in
      docker-compose) echo "  docker-compose (for tests/test_deploy.py): Debian/Ubuntu: sudo apt-get install docker-compose;" \
                           "Fedora: sudo dnf install docker-compose; macOS: brew install docker-compose" ;;
      chromium) echo "  chromium (for tests/browser): Debian/Ubuntu: sudo apt-get install chromium;" \
                     "Fedora: sudo dnf install chromium; macOS: brew install --cask chromium;" \
                     "or set CHROMIUM=/path/to/chromium" ;;
      prometheus) echo "  promtool (for tests/ops/test_alerts.py): Debian/Ubuntu: sudo apt-get install prometheus;" \
                       "elsewhere: the prometheus release archive from prometheus.io" ;;
    esac
  done
} >&2

#!/usr/bin/env bash
# One entry point for a fresh machine with Python 3.11:
#   ./run.sh demo [ARGS...]   the demo: Redis, two workers, a non-sticky balancer, traffic, the audit
#   ./run.sh test [ARGS...]   the whole test suite, then the framework matrix (nox); with ARGS: pytest ARGS...
# Each sets up .venv (once) with what it needs.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
venv=.venv

ensure_venv() {
  local extras=$1 stamp="$venv/.installed-$1"
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # constraints.txt pins the toolchain (tests, lint) so that CI is reproducible; `nox -s latest` tries the newest.
    "$venv/bin/python" -m pip install --quiet -c constraints.txt -e ".[$extras]"
    touch "$stamp"
  fi
}

# The real servers the integration tests use (Debian packages). Installed when we can
# (root with apt-get); otherwise those tests skip with a reason (and fail under CI=true).
ensure_servers() {
  local need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-cli >/dev/null || need+=(redis-tools)
  command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v npm >/dev/null || need+=(nodejs npm)
  ensure_ts_client
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} (Debian packages) for the integration tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian starts packaged services; the tests start their own on free ports.
    service redis-server stop >/dev/null 2>&1 || true
    service redis-sentinel stop >/dev/null 2>&1 || true
    service prometheus stop >/dev/null 2>&1 || true
    service nginx stop >/dev/null 2>&1 || true
    service haproxy stop >/dev/null 2>&1 || true
    ensure_ts_client
  else
    echo "note: ${need[*]} missing: the integration tests that need them will skip" >&2
  fi
}

# The official TypeScript MCP client and the MCP Inspector CLI the continuity and takeover tests drive
# (pinned by package-lock.json; installed again when the lock is newer than what npm installed).
ensure_ts_client() {
  local dir=tests/clients/ts
  if command -v npm >/dev/null && { [ ! -f "$dir/node_modules/.package-lock.json" ] ||
      [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; }; then
    npm ci --prefix "$dir" --no-audit --no-fund --silent || echo "note: npm ci in $dir failed" >&2
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    ensure_venv cli,otel
    exec "$venv/bin/mcp-registry" demo "$@"
    ;;
  test)
    ensure_venv test
    ensure_servers
    if [ $# -gt 0 ]; then
      exec "$venv/bin/python" -m pytest "$@"
    fi
    MCP_REGISTRY_FRAMEWORKS=mcp2-mcpserver "$venv/bin/python" -m pytest
    # The other supported framework lines, each in its own virtualenv (noxfile.py).
    exec "$venv/bin/nox" --non-interactive --envdir .nox
    ;;
  *)
    echo "usage: ./run.sh demo [--duration S --workers N --clients N] | ./run.sh test [pytest args]" >&2
    exit 2
    ;;
esac

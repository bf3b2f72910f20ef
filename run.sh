#!/usr/bin/env bash
# One entry point for a fresh machine with Python 3.11:
#   ./run.sh demo [ARGS...]   the demo: Redis, two workers, a non-sticky balancer, traffic, the audit
#   ./run.sh test [ARGS...]   the whole test suite (pytest ARGS...)
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
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
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
    exec "$venv/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh demo [--duration S --workers N --clients N] | ./run.sh test [pytest args]" >&2
    exit 2
    ;;
esac

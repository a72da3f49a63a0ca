#!/usr/bin/env bash
# Run a command with a Node of the given line (empty: the default, see ensure-node.sh) first on PATH:
#   .ci/with-node.sh LINE COMMAND...
# npm, npx, node-gyp and bin/posthog-plugins (POSTHOG_PLUGINS_NODE) then all use that Node.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(bash "$root/.ci/ensure-node.sh" "$1")
shift
export PATH="$bin:$PATH"
export POSTHOG_PLUGINS_NODE="$bin/node"
# node-gyp builds native modules against the headers of the Node that runs them; a fetched build carries its own.
case "$bin" in "$root/.node/"*) export npm_config_nodedir="${bin%/bin}" ;; esac
exec "$@"

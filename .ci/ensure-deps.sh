#!/usr/bin/env bash
# Install what the tests need and the repository does not carry: real Python Celery (Debian packages,
# run with /usr/bin/python3) and the npm dependencies, installed by the Node first on PATH (make runs this under
# .ci/with-node.sh). isolated-vm ships builds for Node 24 and 26 on Linux x64 and compiles with node-gyp elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! /usr/bin/python3 -c 'import celery, redis, amqp' >/dev/null 2>&1; then
  echo "ensure-deps: installing python3-celery"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3-celery python3-redis
fi

# npm ci when node_modules is missing or older than the lock file; `prepare` compiles the TypeScript.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ensure-deps: npm ci"
  npm ci --no-audit --no-fund
fi

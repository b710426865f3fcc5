#!/usr/bin/env bash
# The embedded default: installs what is missing, builds, then runs a local nats-server with
# JetStream and every daemon as its own process in the foreground. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/install-deps.sh
NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false npx nx run-many -t build --output-style=static >/dev/null
exec node --conditions=@sysbox-mgr-ts/source --import tsx tools/dev-up/dev-up.ts "$@"

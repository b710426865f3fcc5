#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what is missing, lints and checks the format
# (eslint, prettier: CONTRIBUTING.md), type-checks and builds every
# project (the e2e suite runs the built daemons), runs every project's tests one project at a time
# (mount tests and benchmarks of a 2-core machine should not race each other), and prints a total.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh || exit 1

export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false FORCE_COLOR=0
npm run --silent lint || { echo "lint, format or commit-subject check failed (npm run format fixes the format)"; exit 1; }
npx nx run-many -t typecheck build --output-style=static || { echo "typecheck/build failed"; exit 1; }
# tools/ is no nx project: its scripts (dev-up behind `npm run up`, the bench report) are checked here.
npx tsc --noEmit -p tools/tsconfig.json || { echo "typecheck of tools/ failed"; exit 1; }

log=$(mktemp)
npx nx run-many -t test --parallel=1 --output-style=stream 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# Sum vitest's "Tests  N failed | M passed (T)" lines into one closing line.
node -e '
  const text = require("fs").readFileSync(process.argv[1], "utf8").replace(/\x1b\[[0-9;]*m/g, "");
  let passed = 0, failed = 0, skipped = 0;
  for (const line of text.split("\n")) {
    if (!/^\s*(?:\S+\s+)?Tests\s+\d/.test(line)) continue;
    passed += +(line.match(/(\d+) passed/)?.[1] ?? 0);
    failed += +(line.match(/(\d+) failed/)?.[1] ?? 0);
    skipped += +(line.match(/(\d+) skipped/)?.[1] ?? 0);
  }
  console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
' "$log"
rm -f "$log"
exit "$status"

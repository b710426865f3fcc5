#!/usr/bin/env bash
# Lays out a workspace project: package.json with the source export condition, tsconfigs, vitest config.
# usage: tools/scaffold/new-project.sh packages|apps <name> [description]
set -euo pipefail
kind=$1 name=$2 desc=${3:-}
dir="$kind/$name"
mkdir -p "$dir/src"
pkg="@sysbox-mgr-ts/$name"
# A library exports its source (for tests) and dist; an app is a daemon with a bin and no exports.
if [ "$kind" = packages ]; then
  surface='"exports": {
    ".": {
      "@sysbox-mgr-ts/source": "./src/index.ts",
      "types": "./dist/index.d.ts",
      "default": "./dist/index.js"
    }
  },
  "files": ["dist"],'
else
  surface="\"bin\": { \"sysbox-$name\": \"./bin/sysbox-$name.js\" },
  \"files\": [\"dist\", \"bin\", \"README.md\"],"
  mkdir -p "$dir/bin"
  printf '#!/usr/bin/env -S node --max-semi-space-size=1\nimport "../dist/main.js";\n' > "$dir/bin/sysbox-$name.js"
  chmod +x "$dir/bin/sysbox-$name.js"
fi
cat > "$dir/package.json" <<JSON
{
  "name": "$pkg",
  "version": "0.1.0",
  "description": "$desc",
  "license": "Apache-2.0",
  "type": "module",
  "engines": { "node": ">=20" },
  $surface
  "nx": { "targets": { "build": {}, "typecheck": {}, "test": {} } }
}
JSON
cat > "$dir/tsconfig.json" <<JSON
{
  "extends": "../../tsconfig.base.json",
  "compilerOptions": { "noEmit": true },
  "include": ["src", "*.ts"]
}
JSON
cat > "$dir/tsconfig.build.json" <<JSON
{
  "extends": "../../tsconfig.base.json",
  "compilerOptions": { "rootDir": "src", "outDir": "dist" },
  "include": ["src"],
  "exclude": ["src/**/*.test.ts"]
}
JSON
cat > "$dir/vitest.config.ts" <<'TS'
import { defineConfig } from 'vitest/config';
import { sourceConditions } from '../../vitest.shared.js';

export default defineConfig(sourceConditions({ test: { testTimeout: 30_000 } }));
TS

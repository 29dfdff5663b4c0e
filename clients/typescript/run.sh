#!/usr/bin/env bash
# The TypeScript generated client: types from openapi.yaml by openapi-typescript, called through
# openapi-fetch, type-checked strictly by tsc, then scenario.ts against the live server that
# clients/run.sh started (it exports the USAGE_API_* environment this reads).
#
#   clients/run.sh typescript
#
# Everything generated (types, compiled scenario) goes to clients/typescript/generated/, made
# anew on every run and never committed (it is gitignored, as node_modules/ is), inside this
# folder so that node finds node_modules/ from the compiled scenario.
set -euo pipefail
cd "$(dirname "$0")"
OUT=generated

# npm ci when node_modules/ is missing or was installed from another package-lock.json.
if ! cmp -s package-lock.json node_modules/.installed-lock.json; then
    npm ci --no-audit --no-fund --silent
    cp package-lock.json node_modules/.installed-lock.json
fi

rm -rf "$OUT"
npx --no-install openapi-typescript ../../openapi.yaml -o "$OUT/api.d.ts"
npx --no-install tsc -p tsconfig.json # strict; a type error fails the run and emits nothing
node "$OUT/scenario.js"

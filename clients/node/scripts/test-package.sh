#!/usr/bin/env bash
# The Node client as a user gets it: `npm pack`, the tarball installed into a fresh folder (its dependencies from
# the npm registry), then the packaged examples run from there as CommonJS (require) and as an ES module
# (import) against a live samplerd, and a TypeScript file of each kind type-checked against the installed types.
# The README's Node install block is these commands.
#
#   SAMPLERD_BIN=build/service/samplerd clients/node/scripts/test-package.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${SAMPLERD_BIN:-$here/../../build/service/samplerd}"
work="$(mktemp -d /tmp/samplerd-node-package-XXXXXX)"
server=""
cleanup() {
  [[ -n "$server" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cd "$here"
[[ -d node_modules ]] || npm ci --no-audit --no-fund
tarball="$(npm pack --silent --pack-destination "$work" | tail -n 1)"   # runs prepare: the build

mkdir "$work/app" && cd "$work/app"
npm init -y > /dev/null
npm install --no-audit --no-fund "$work/$tarball"

socket="$work/samplerd.sock"
"$bin" --listen "unix:$socket" --metrics_listen '' 2> "$work/samplerd.log" &
server=$!
for _ in $(seq 100); do [[ -S "$socket" ]] && break; sleep 0.1; done
for example in example.cjs example.mjs; do
  cp "node_modules/samplerd/examples/$example" .
  out="$(node "$example" "unix:$socket")"
  echo "$example:"
  echo "$out"
  lines="$(grep -cE '^[0-9]+ [A-Z]+ ' <<< "$out" || true)"
  [[ "$lines" == 5 ]] || { echo "test-package: $example printed $lines of 5 steps"; exit 1; }
done

# Types through the exports map, for both module systems (moduleResolution node16 reads "exports").
cat > esm.mts <<'TS'
import { Client, type StepResult } from "samplerd";
const client: Client = new Client("localhost:50051");
const check: (r: StepResult) => number = (r) => r.token;
void check;
client.close();
TS
cat > cjs.cts <<'TS'
import samplerd = require("samplerd");
const client: samplerd.Client = new samplerd.Client("localhost:50051");
const r: Promise<samplerd.StepResult> = client.session({ seed: 1n }).step(new Float32Array(4));
void r;
client.close();
TS
"$here/node_modules/.bin/tsc" --noEmit --strict --module node16 --moduleResolution node16 --target es2020 \
  --skipLibCheck esm.mts cjs.cts
echo "test-package: the packed tarball works from import and require, with types"

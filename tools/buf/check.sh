#!/usr/bin/env bash
# proto/'s checks (`make proto-lint`, ctest proto_lint): installs the pinned
# buf (npm ci, package-lock.json), then buf lint, buf format (no diff
# allowed) and buf breaking against PROTO_BASELINE, the previous release's
# commit (set in the Makefile; it moves at each release). Rules and
# exceptions: buf.yaml at the repository root.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
: "${PROTO_BASELINE:?set PROTO_BASELINE to the previous release commit (Makefile)}"
(cd tools/buf && npm ci --no-audit --no-fund --loglevel=error)
buf=tools/buf/node_modules/.bin/buf
base=$(git rev-parse --verify "$PROTO_BASELINE^{commit}") || {
  echo "proto_lint: baseline $PROTO_BASELINE is not a commit of this clone (a shallow clone? fetch it)" >&2
  exit 1
}
"$buf" lint
echo "proto_lint: buf lint clean"
"$buf" format -d --exit-code
echo "proto_lint: buf format clean"
"$buf" breaking --against ".git#ref=$base,subdir=proto"
echo "proto_lint: no breaking change against $base"

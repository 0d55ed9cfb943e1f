#!/usr/bin/env bash
# The demo federation in one command: build, then `fedprofile-coordinator local`,
# which makes certificates, starts a coordinator and one client node per partner
# on loopback over mutual TLS, trains, stops everything, and leaves model.json,
# metrics.csv and summary.json (and logs/, certs/, ledgers/) in OUT_DIR.
#
#   deploy/demo/run.sh [OUT_DIR] [RUN_FILE]     (defaults: out/demo, deploy/demo/run.toml)
#   BIN_DIR=DIR deploy/demo/run.sh ...          (use DIR's fedprofile-coordinator and
#                                                fedprofile-client; no build)
#
# The partners are those of RUN_FILE's folder's federation.toml if it has one
# (e.g. deploy/demo/value/: monthly charges with linear regression;
# deploy/demo/caravan/: another federation, three insurers), else
# deploy/demo/federation.toml (the four Telco partners, the churn schema).
#
# With deploy/demo/run-dp.toml the partners train with record-level differential
# privacy; their ledgers go to OUT_DIR/ledgers and are verified at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-out/demo}"
run_file="${2:-$here/run.toml}"
[ -f "$run_file" ] || { echo "RUN_FILE: $run_file is not a file" >&2; exit 1; }
federation="$(cd "$(dirname "$run_file")" && pwd)/federation.toml"
[ -f "$federation" ] || federation="$here/federation.toml"

if [ -n "${BIN_DIR:-}" ]; then
  [ -d "$BIN_DIR" ] || { echo "BIN_DIR: $BIN_DIR is not a directory" >&2; exit 1; }
  bin="$(cd "$BIN_DIR" && pwd)"
  for b in fedprofile-coordinator fedprofile-client; do
    [ -x "$bin/$b" ] || { echo "BIN_DIR: $bin/$b is not an executable file" >&2; exit 1; }
  done
  echo "== binaries from $bin (BIN_DIR; not built)"
else
  echo "== building (release)"
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" \
    --bin fedprofile-coordinator --bin fedprofile-client
  bin="${CARGO_TARGET_DIR:-$root/target}/release"
fi

exec "$bin/fedprofile-coordinator" local --federation "$federation" --run "$run_file" \
  --out "$out" --client-bin "$bin/fedprofile-client"

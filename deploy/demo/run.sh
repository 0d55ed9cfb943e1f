#!/usr/bin/env bash
# The demo federation in one command: build, make certificates, start a
# coordinator and one client node per partner on loopback over mutual TLS, train,
# stop everything, leave model.json, metrics.csv and summary.json in OUT_DIR.
#
#   deploy/demo/run.sh [OUT_DIR] [RUN_FILE]     (defaults: out/demo, deploy/demo/run.toml)
#   BIN_DIR=DIR deploy/demo/run.sh ...          (use DIR's fedprofile-coordinator and
#                                                fedprofile-client; no build)
#
# The partners' configs are RUN_FILE's folder's clients/ if it has one (e.g.
# deploy/demo/value/: monthly charges with linear regression; deploy/demo/caravan/:
# another federation, three insurers), else deploy/demo/clients/ (the churn schema).
# The partners are that folder's *.toml files, one client node each, named after
# the file (clients/partner-a.toml is partner-a, with certificate partner-a.pem).
#
# With deploy/demo/run-dp.toml the partners train with record-level differential
# privacy; their ledgers go to OUT_DIR/ledgers and are verified at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-out/demo}"
run_file="$(cd "$(dirname "${2:-$here/run.toml}")" && pwd)/$(basename "${2:-$here/run.toml}")"
clients="$(dirname "$run_file")/clients"
[ -d "$clients" ] || clients="$here/clients"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
logs="$out/logs"
mkdir -p "$logs"
# Each demo is a fresh federation: new ledgers (a real partner never deletes its ledger).
rm -rf "$out/ledgers"
mkdir -p "$out/ledgers"

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

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

partners=()
for config in "$clients"/*.toml; do
  [ -e "$config" ] || continue
  partners+=("$(basename "$config" .toml)")
done
[ "${#partners[@]}" -gt 0 ] || { echo "no client configs (*.toml) in $clients" >&2; exit 1; }

if grep -q '^mode = "record"' "$run_file"; then
  echo "== privacy: what this run will cost each partner, composed with its ledger (before anything runs)"
  for p in "${partners[@]}"; do
    grep -q '^\[privacy\]' "$clients/$p.toml" || continue
    "$bin/fedprofile-client" privacy cost --run "$run_file" --config "$clients/$p.toml" \
      --ledger "$out/ledgers/$p.jsonl"
  done
fi

echo "== certificates (development CA) in $here/certs"
args=()
for p in "${partners[@]}"; do args+=(--client "$p"); done
"$bin/fedprofile-coordinator" certs init --dir "$here/certs" "${args[@]}" >/dev/null

echo "== coordinator"
rm -f "$out/coordinator.addr"
"$bin/fedprofile-coordinator" serve --config "$here/coordinator.toml" --run "$run_file" \
  --out "$out" --state-dir "$out/state" --listen 127.0.0.1:0 --addr-file "$out/coordinator.addr" \
  >"$logs/coordinator.out" 2>"$logs/coordinator.log" &
coordinator=$!
pids+=("$coordinator")
for _ in $(seq 1 100); do
  [ -s "$out/coordinator.addr" ] && break
  kill -0 "$coordinator" 2>/dev/null || { cat "$logs/coordinator.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$out/coordinator.addr" ] || { echo "coordinator did not start" >&2; exit 1; }
port="$(cut -d: -f2 < "$out/coordinator.addr")"
echo "   listening on 127.0.0.1:$port (mutual TLS)"

echo "== client nodes: ${partners[*]} (configs in $clients)"
for p in "${partners[@]}"; do
  ledger=()
  grep -q '^\[privacy\]' "$clients/$p.toml" && ledger=(--ledger "$out/ledgers/$p.jsonl")
  "$bin/fedprofile-client" run --config "$clients/$p.toml" \
    --coordinator "https://localhost:$port" "${ledger[@]}" \
    >"$logs/$p.out" 2>"$logs/$p.log" &
  pids+=("$!")
done

echo "== training"
tail -n +1 -f "$logs/coordinator.out" --pid "$coordinator" &
tailer=$!
status=0
wait "$coordinator" || status=$?
sleep 0.2
kill "$tailer" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
  echo "the coordinator failed (exit $status); its log:" >&2
  tail -n 20 "$logs/coordinator.log" >&2
  exit "$status"
fi
echo "== done: $out/model.json, $out/metrics.csv, $out/summary.json (logs in $logs)"
cat "$out/summary.json"
echo
if compgen -G "$out/ledgers/*.jsonl" >/dev/null; then
  echo "== privacy: each partner's ledger, verified"
  for p in "${partners[@]}"; do
    "$bin/fedprofile-client" privacy ledger verify "$out/ledgers/$p.jsonl"
  done
fi

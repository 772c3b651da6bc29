#!/usr/bin/env bash
# bench/entrance-abuse.sh — heartbeat load on an entrance with and without an
# abuse client flooding it, same build, same run (docs/performance.md,
# "Hostile load (issue 15)").
#
# For each run in ORDER it starts a fresh entrance with the security defaults
# (its own empty data directory, embedded store, store_cache 512 MiB, log level
# warn, no log file, reachability_check = false; [limits] untouched), records
# its idle RSS, and drives it with daemons/examples/entrance_load. In `abuse`
# runs daemons/examples/abuse_load floods it at the same time from 127.0.1.x:
# 100 000 GET /dandelion/nonce in 5 s then 100/s, 4 000 idle connections and
# 200 half-sent requests, each opened again 5 s after the entrance closes it. The
# load tool's boxes come from 32 addresses (127.0.0.2-.33), so that no
# per-address limit had to be raised for them. Before each run it waits (at
# most QUIET_WAIT s) for CPU pressure under QUIET_BELOW %.
#
# Usage: [ORDER="plain abuse plain abuse"] bench/entrance-abuse.sh
#        [entrance_load options, default: --boxes 2000 --interval 5 --duration 30]
# Needs: cargo build --release -p dandelion-daemons --bin dandelion \
#          --example entrance_load --example abuse_load; curl, python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${DANDELION_BIN:-$ROOT/target/release/dandelion}"
LOAD="$ROOT/target/release/examples/entrance_load"
ABUSE="$ROOT/target/release/examples/abuse_load"
ORDER="${ORDER:-plain abuse plain abuse}"
QUIET_BELOW="${QUIET_BELOW:-10}"; QUIET_WAIT="${QUIET_WAIT:-300}"
[[ -x "$BIN" && -x "$LOAD" && -x "$ABUSE" ]] || {
  echo "build first: cargo build --release -p dandelion-daemons --bin dandelion --example entrance_load --example abuse_load" >&2; exit 1; }
(( $# )) || set -- --boxes 2000 --interval 5 --duration 30
ulimit -n "$(ulimit -Hn)"
WORK="$(mktemp -d /tmp/entrance-abuse.XXXXXX)"
ENT=""; ATT=""
cleanup() {
  for p in $ATT $ENT; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

pressure() { awk -F'[ =]' '/^some/ {print $3}' /proc/pressure/cpu; }
wait_quiet() {
  local end=$(( $(date +%s) + QUIET_WAIT ))
  while (( $(date +%s) < end )) && awk -v p="$(pressure)" -v t="$QUIET_BELOW" 'BEGIN {exit !(p >= t)}'; do
    sleep 5
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "# $(date -u +%FT%TZ) $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') load: $*"
n=0
for mode in $ORDER; do
  n=$((n + 1))
  data="$WORK/$mode-$n"; mkdir -p "$data"
  port=$(free_port)
  printf 'log_file = false\nlog_level = "warn"\nstore_cache = "512 MiB"\n[entrance]\njoin_token = "bench-join-token-0001"\nreachability_check = false\nnew_boxes_per_address_per_hour = 0\nnew_boxes_per_prefix_per_hour = 0\n' >"$data/dandelion.toml"
  id=$("$BIN" --data-dir "$data" id entrance | awk '/^id/ {print $2}')
  wait_quiet
  p0=$(pressure)
  "$BIN" --config "$data/dandelion.toml" --data-dir "$data" entrance --listen "127.0.0.1:$port" 2>"$data/entrance.err" &
  ENT=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  sleep 3
  idle=$(awk '/VmRSS/ {print $2}' /proc/$ENT/status)
  echo "== run $n: $mode, CPU pressure before $p0 %, entrance idle VmRSS $idle kB"
  if [[ $mode == abuse ]]; then
    /usr/bin/time -f "abuse tool: CPU %U s user + %S s system" \
      "$ABUSE" --target "127.0.0.1:$port" --duration 45 >"$data/abuse.out" 2>&1 &
    ATT=$!
  elif [[ $mode != plain ]]; then
    echo "ORDER: plain or abuse, not $mode" >&2; exit 2
  fi
  "$LOAD" --url "ws://127.0.0.1:$port/dandelion/ws#$id" --join bench-join-token-0001 \
    --pid "$ENT" --sources 32 "$@" 2>&1
  if [[ -n "$ATT" ]]; then
    wait "$ATT" 2>/dev/null || true; ATT=""
    cat "$data/abuse.out"
    curl -s "http://127.0.0.1:$port/metrics" | grep '^dandelion_refused_total' || true
  fi
  echo "CPU pressure after: $(pressure) %"
  kill "$ENT"; wait "$ENT" 2>/dev/null || true; ENT=""
  grep -v '^$' "$data/entrance.err" | tail -3 || true
  rm -rf "$data"
done

#!/usr/bin/env bash
# bench/entrance-tls.sh — heartbeat load on an entrance over wss:// against the
# same load over plain ws://, same build, same run (docs/performance.md,
# "TLS (issue 13)").
#
# Makes a private CA and a certificate for 127.0.0.1 (openssl, ECDSA P-256),
# then for each run in ORDER starts a fresh entrance (its own empty data
# directory; the TLS one with tls_cert/tls_key, both reachability_check = false,
# embedded store, store_cache 512 MiB, log level warn, no log file), records its
# idle RSS, drives it with daemons/examples/entrance_load (--ca for wss://) and
# stops it. Before each run it waits (at most QUIET_WAIT s) for the CPU pressure
# (/proc/pressure/cpu, some avg10) to fall under QUIET_BELOW % and prints it.
#
# Usage: [DANDELION_BIN=…] [LOAD_BIN=…] [ORDER="plain tls plain tls"] [STORE=redis://…]
#        bench/entrance-tls.sh [entrance_load options, default:
#        --boxes 4000 --interval 5 --duration 30]
# Needs: cargo build --release -p dandelion-daemons --bin dandelion --example entrance_load;
#        openssl, curl, python3; ulimit -n above the number of boxes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${DANDELION_BIN:-$ROOT/target/release/dandelion}"
LOAD="${LOAD_BIN:-$ROOT/target/release/examples/entrance_load}"
ORDER="${ORDER:-plain tls plain tls}"
QUIET_BELOW="${QUIET_BELOW:-10}"; QUIET_WAIT="${QUIET_WAIT:-300}"
[[ -x "$BIN" && -x "$LOAD" ]] || { echo "build first: cargo build --release -p dandelion-daemons --bin dandelion --example entrance_load" >&2; exit 1; }
(( $# )) || set -- --boxes 4000 --interval 5 --duration 30
ulimit -n "$(ulimit -Hn)"
WORK="$(mktemp -d /tmp/entrance-tls.XXXXXX)"
ENT=""
cleanup() {
  if [[ -n "$ENT" ]]; then kill "$ENT" 2>/dev/null || true; wait "$ENT" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The CA and the entrance's certificate (IP SAN 127.0.0.1: the tool dials the IP).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=dandelion-bench-ca -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$WORK/entrance.key" -out "$WORK/entrance.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$WORK/leaf.ext"
openssl x509 -req -in "$WORK/entrance.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/entrance.crt" 2>/dev/null

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
  {
    # The load comes from 8 addresses (127.0.0.2-.9), thousands of sessions
    # each: the per-address limits are lifted for it, the total raised.
    printf 'log_file = false\nlog_level = "warn"\nstore_cache = "512 MiB"\n'
    printf '[limits]\nmax_connections = 30000\nmax_connections_per_address = 8192\nhandshakes_per_minute = 0\n'
    printf '[entrance]\n'
    printf 'join_token = "bench-join-token-0001"\nreachability_check = false\n'
    printf 'new_boxes_per_address_per_hour = 0\nnew_boxes_per_prefix_per_hour = 0\n'
    if [[ $mode == tls ]]; then
      printf 'tls_cert = "%s"\ntls_key = "%s"\n' "$WORK/entrance.crt" "$WORK/entrance.key"
    fi
  } >"$data/dandelion.toml"
  id=$("$BIN" --data-dir "$data" id entrance | awk '/^id/ {print $2}')
  case $mode in
    plain) url="ws://127.0.0.1:$port/dandelion/ws#$id"; health="http://127.0.0.1:$port/healthz"; ca=() ;;
    tls) url="wss://127.0.0.1:$port/dandelion/ws#$id"; health="https://127.0.0.1:$port/healthz"; ca=(--ca "$WORK/ca.pem") ;;
    *) echo "ORDER: plain or tls, not $mode" >&2; exit 2 ;;
  esac
  wait_quiet
  p0=$(pressure); load0=$(cut -d' ' -f1 /proc/loadavg)
  "$BIN" --config "$data/dandelion.toml" --data-dir "$data" entrance ${STORE:+--store "$STORE"} --listen "127.0.0.1:$port" 2>"$data/entrance.err" &
  ENT=$!
  for _ in $(seq 100); do curl -sf --cacert "$WORK/ca.pem" "$health" >/dev/null && break; sleep 0.1; done
  kill -0 "$ENT" 2>/dev/null || { echo "the entrance did not start:" >&2; cat "$data/entrance.err" >&2; exit 1; }
  sleep 3
  idle=$(awk '/VmRSS/ {print $2}' /proc/$ENT/status)
  echo "== run $n: $mode, CPU pressure before $p0 %, load average $load0, entrance idle VmRSS $idle kB"
  /usr/bin/time -f "load tool: CPU %U s user + %S s system over its whole run (ramp-up included), max RSS %M kB" \
    "$LOAD" --url "$url" --join bench-join-token-0001 --pid "$ENT" "${ca[@]}" "$@" 2>&1
  echo "CPU pressure after: $(pressure) %"
  kill "$ENT"; wait "$ENT" 2>/dev/null || true; ENT=""
  grep -v '^$' "$data/entrance.err" | tail -3 || true
  rm -rf "$data"
done

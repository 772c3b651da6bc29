#!/usr/bin/env bash
# bench/origin.sh — small files the publisher serves itself (playlists, and a new
# segment before a box holds it) against nginx serving the same files, side by
# side with ../shared/bench/serve-vs-nginx.sh (issue 18: "playlists at the same
# standard"). A publisher with an entrance but no box keeps every file at the
# origin; each file is pushed, read once (which keeps it in memory), then served.
#
# Usage: bench/origin.sh [--sizes 1k] [serve-vs-nginx.sh options, e.g. --rounds 5]
# Needs: cargo build --release -p dandelion-daemons --bin dandelion; nginx, wrk, curl.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED_BENCH:-$ROOT/../shared/bench}"
# shellcheck source=/dev/null
source "$SHARED/lib/common.sh"
BIN="$ROOT/target/release/dandelion"
[[ -x "$BIN" ]] || die "build first: cargo build --release -p dandelion-daemons --bin dandelion"
SIZES=1k
if [[ "${1:-}" == --sizes ]]; then SIZES="$2"; shift 2; fi
need nginx wrk curl
bench_init origin-bench
W="$BENCH_WORK"

E=$(free_port); P=$(free_port)
"$BIN" --data-dir "$W/publisher" id publisher >"$W/publisher.id"
KEY=$(awk '/public key/ {print $3}' "$W/publisher.id")
EID=$("$BIN" --data-dir "$W/entrance" id entrance | awk '/^id/ {print $2}')
printf 'log_file = false\n[entrance]\njoin_token = "origin-bench-join-token"\npublisher_keys = ["%s"]\n' "$KEY" >"$W/entrance.toml"
printf 'log_file = false\n[publisher]\nentrances = ["ws://127.0.0.1:%s/dandelion/ws#%s"]\nmax_ttl = "2h"\n' "$E" "$EID" >"$W/publisher.toml"
start_bg "$W/entrance.out" "" "$BIN" --config "$W/entrance.toml" --data-dir "$W/entrance" --log-level warn entrance --listen "127.0.0.1:$E"
wait_http "http://127.0.0.1:$E/healthz" 20 "$STARTED_PID" '^200$' || die "the entrance did not start"
start_bg "$W/publisher.out" "" "$BIN" --config "$W/publisher.toml" --data-dir "$W/publisher" --log-level warn publisher --listen "127.0.0.1:$P"
PUB=$STARTED_PID
wait_http "http://127.0.0.1:$P/healthz" 20 "$PUB" '^200$' || die "the publisher did not start: $(cat "$W/publisher.out")"

# The harness's own file names (bench-<size>-<i>.bin), made here so the
# publisher can hold the same bytes under p/<name>.
DIR="$W/www"; mkdir -p "$DIR"
IFS=',' read -ra SIZE_LIST <<<"$SIZES"
for s in "${SIZE_LIST[@]}"; do
  case "$s" in *k|*K) bytes=$(( ${s%[kK]} * 1024 ));; *[0-9]) bytes=$s;; *) die "sizes up to 64k, in k or bytes: $s";; esac
  for i in 1 2 3 4; do
    f="bench-$s-$i.bin"
    head -c "$bytes" /dev/urandom >"$DIR/$f"
    "$BIN" --log-level warn push "$DIR/$f" --as "p/$f" --ttl 2h --to "http://127.0.0.1:$P" \
      --token "$(cat "$W/publisher/admin.token")" >/dev/null
    curl -fsS -o /dev/null "http://127.0.0.1:$P/p/$f"
  done
done
log "publisher :$P holds ${SIZES} files at its origin, in memory"
"$SHARED/serve-vs-nginx.sh" --candidate-url-prefix "http://127.0.0.1:$P/p" --dir "$DIR" \
  --sizes "$SIZES" --files 4 --candidate-pid "$PUB" "$@"

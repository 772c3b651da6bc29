#!/usr/bin/env bash
# bench/box.sh — the box's performance figures for docs/performance.md:
# idle RSS and CPU after start, serving throughput side by side with nginx
# (../shared/bench/serve-vs-nginx.sh), and peak RSS while receiving a 1 GiB file.
#
# Usage: [DANDELION_BIN=path/to/dandelion] [BOX_BIN=path/to/dandelion-box] bench/box.sh [path/to/serve-vs-nginx.sh] [extra serve-vs-nginx options]
# Needs: a release build (cargo build --release -p dandelion-daemons --bin dandelion
# --bin dandelion-box --example box_push), nginx, wrk, curl, python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SERVE="${1:-$ROOT/../shared/bench/serve-vs-nginx.sh}"; shift || true
BIN="${DANDELION_BIN:-$ROOT/target/release/dandelion}"
# The box runs as household devices run it: dandelion-box, the box role alone.
# BOX_BIN=path/to/dandelion runs `dandelion box` instead (or an older build).
BOX_BIN="${BOX_BIN:-$ROOT/target/release/dandelion-box}"
BOX_CMD=("$BOX_BIN"); [[ "$(basename "$BOX_BIN")" == dandelion-box ]] || BOX_CMD+=(box)
PUSH="$ROOT/target/release/examples/box_push"
[[ -x "$BIN" && -x "$BOX_BIN" && -x "$PUSH" ]] || { echo "build first: cargo build --release -p dandelion-daemons --bin dandelion --bin dandelion-box --example box_push" >&2; exit 1; }
WORK="$(mktemp -d /tmp/box-bench.XXXXXX)"; trap 'kill "$BOX" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY=$("$BIN" --data-dir "$WORK/pub" id publisher | awk '/public key/ {print $3}')
PID_ID=$("$BIN" --data-dir "$WORK/pub" id publisher | awk '/^id/ {print $2}')
# box_push signs only for the box it means to reach: URL#ID.
BOX_ID=$("$BIN" --data-dir "$WORK/box" id box | awk '/^id/ {print $2}')
printf '[box]\npublisher_keys = ["%s"]\nmax_ttl = "2h"\n' "$KEY" >"$WORK/box.toml"
# Its own process group (setsid): serve-vs-nginx.sh counts the CPU of the
# candidate's group, and in this script's group that would include this shell's
# reaped children, wrk among them (before 2026-12-06 it did: the box's CPU per
# request read ~2x too high).
setsid "${BOX_CMD[@]}" --config "$WORK/box.toml" --data-dir "$WORK/box" --log-level warn --listen "127.0.0.1:$PORT" 2>"$WORK/box.err" &
BOX=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
sleep 3
t0=$(awk '{print $14+$15}' /proc/$BOX/stat); sleep 10; t1=$(awk '{print $14+$15}' /proc/$BOX/stat)
# RssAnon is the heap and stacks; RssFile is mostly the executable's own code
# pages (clean, shared, reclaimable, but counted in VmRSS).
echo "idle: $(grep VmRSS /proc/$BOX/status | tr -s ' ') ($(grep -E 'RssAnon|RssFile' /proc/$BOX/status | tr -s ' \n' ' ')), CPU $(( (t1 - t0) * 1000 / $(getconf CLK_TCK) / 10 )) ms per second over 10 s"

# The serving benchmark's files, pushed through the box's own publisher protocol.
mkdir -p "$WORK/www"
for s in 100k 1m; do for i in 1 2 3 4; do
  case $s in 100k) n=$((100*1024));; 1m) n=$((1024*1024));; esac
  head -c $n /dev/urandom >"$WORK/www/bench-$s-$i.bin"
done; done
"$PUSH" --key-dir "$WORK/pub" --to "ws://127.0.0.1:$PORT/dandelion/ws#$BOX_ID" --prefix /bench --ttl 7200 "$WORK"/www/*.bin >/dev/null
bash "$SERVE" --candidate-url-prefix "http://127.0.0.1:$PORT/$PID_ID/bench" --dir "$WORK/www" --candidate-pid "$BOX" "$@"

# A 1 GiB transfer: memory must stay flat.
head -c $((1024*1024*1024)) /dev/urandom >"$WORK/big.bin"
"$PUSH" --key-dir "$WORK/pub" --to "ws://127.0.0.1:$PORT/dandelion/ws#$BOX_ID" --prefix /big --ttl 600 "$WORK/big.bin" | cut -c1-160
echo "after 1 GiB received: peak $(grep VmHWM /proc/$BOX/status | tr -s ' '), now $(grep VmRSS /proc/$BOX/status | tr -s ' ')"

#!/usr/bin/env bash
# bench/offload.sh — the share of viewer bytes served by boxes (issue 18) for a
# live stream on `dandelion up`: ffmpeg encodes a test pattern live into 1 s HLS
# segments, `dandelion push --watch` publishes it, and N ffmpeg players (stream
# copy, no decoding) play it through the publisher for D seconds. Prints the
# publisher's offload ledger (`dandelion stats`) for the stream.
#
# Usage: bench/offload.sh [--players N] [--seconds D]   (defaults 20 and 60)
#        DANDELION=target/debug/dandelion bench/offload.sh   (any build will do:
#        the figure is a share of bytes, not a speed)
# Needs: a built `dandelion` (default target/release/dandelion), ffmpeg, and the
#        the ports `dandelion up` uses (7070, 7072, and 7081… for the boxes) free.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(realpath "${DANDELION:-$ROOT/target/release/dandelion}")"
PLAYERS=20; SECONDS_PLAYED=60
while (( $# )); do
  case "$1" in
    --players) PLAYERS="$2"; shift 2;;
    --seconds) SECONDS_PLAYED="$2"; shift 2;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2;;
  esac
done
[[ -x "$BIN" ]] || { echo "build first: cargo build --release -p dandelion-daemons --bin dandelion" >&2; exit 1; }
command -v ffmpeg >/dev/null || { echo "needs ffmpeg" >&2; exit 1; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"

"$BIN" --data-dir "$WORK/net" up --boxes 3 >"$WORK/up.log" 2>&1 & PIDS+=($!)
# `dandelion up` serves https under its own CA (ffmpeg does not check certificates
# unless told to).
PUB=https://127.0.0.1:7072
get() { curl -fsS --cacert "$WORK/net/ca.pem" "$@" 2>/dev/null; }
for _ in $(seq 150); do
  get "$PUB/healthz" | grep -q '"known_boxes":3' && break
  sleep 0.2
done
get "$PUB/healthz" | grep -q '"known_boxes":3' || { echo "the network did not come up:" >&2; tail -20 "$WORK/up.log" >&2; exit 1; }

mkdir -p "$WORK/live"
ffmpeg -nostdin -hide_banner -y -re -f lavfi -i testsrc=size=640x360:rate=25 -re -f lavfi -i sine \
  -c:v libx264 -preset ultrafast -g 25 -b:v 800k -c:a aac -f hls -hls_time 1 -hls_list_size 6 \
  -hls_flags delete_segments "$WORK/live/index.m3u8" >/dev/null 2>"$WORK/encoder.log" & PIDS+=($!)
"$BIN" --data-dir "$WORK/net" push --watch "$WORK/live" --replicas 2 --ttl 60s \
  >"$WORK/watch.log" 2>&1 & PIDS+=($!)
for _ in $(seq 150); do
  [[ "$(get "$PUB/live/index.m3u8" | grep -c '\.ts')" -ge 3 ]] && break
  sleep 0.2
done

echo "playing: $PLAYERS players for $SECONDS_PLAYED s"
PLAYER_PIDS=()
for i in $(seq "$PLAYERS"); do
  ffmpeg -nostdin -hide_banner -y -i "$PUB/live/index.m3u8" -t "$SECONDS_PLAYED" \
    -c copy -f null - >/dev/null 2>"$WORK/player-$i.log" & PLAYER_PIDS+=($!)
done
failed=0
for p in "${PLAYER_PIDS[@]}"; do wait "$p" || failed=$((failed + 1)); done
echo "players done ($failed failed); waiting for the boxes' counters to be collected"
sleep 12
"$BIN" --data-dir "$WORK/net" stats

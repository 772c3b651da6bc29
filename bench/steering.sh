#!/usr/bin/env bash
# bench/steering.sh — what a content-steering player asks the publisher for, against
# nginx serving the same bytes as static files (issue 18: "playlists at the same
# standard"). A steered stream costs the publisher three answers computed per viewer:
#
#   steer     /dandelion/steer/<playlist>          the multivariant playlist
#   manifest  /dandelion/steering/<playlist>       the steering manifest, every 4 s
#   pathway   /dandelion/pathway/<box>/<playlist>  the media playlist as one box's
#                                                  pathway, every segment
#
# A network of one entrance, one box and a publisher on loopback (plain HTTP); a
# live window of 6 segments and its playlist pushed onto the box. Each answer is
# fetched once and written under the same path into the directory nginx serves, so
# both servers answer the same paths with the same bytes; then wrk (the shared kit's
# run_wrk, wrkline.py and summarize.py, as serve-vs-nginx.sh does for files) runs
# them alternately, nginx first every other round. Last line: "ratio R (...)".
#
# Usage: bench/steering.sh [--rounds R] [--duration S] [--connections C]
# Needs: cargo build --release -p dandelion-daemons --bin dandelion; nginx, wrk, curl,
#        python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED_BENCH:-$ROOT/../shared/bench}"
# shellcheck source=/dev/null
source "$SHARED/lib/common.sh"
BIN="${DANDELION_BIN:-$ROOT/target/release/dandelion}"
[[ -x "$BIN" ]] || die "build first: cargo build --release -p dandelion-daemons --bin dandelion"
ROUNDS=5; DUR=2; WARM=1; CONNS=64; THREADS=2
while (( $# )); do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2;;
    --duration) DUR="$2"; shift 2;;
    --connections) CONNS="$2"; shift 2;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown argument: $1 (see --help)";;
  esac
done
need nginx wrk curl python3
bench_init steering-bench
W="$BENCH_WORK"
log "dandelion $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

E=$(free_port); P=$(free_port); B=$(free_port)
"$BIN" --data-dir "$W/publisher" id publisher >"$W/publisher.id"
KEY=$(awk '/public key/ {print $3}' "$W/publisher.id")
EID=$("$BIN" --data-dir "$W/entrance" id entrance | awk '/^id/ {print $2}')
EWS="ws://127.0.0.1:$E/dandelion/ws#$EID"
printf 'log_file = false\n[entrance]\njoin_token = "steering-bench-join"\npublisher_keys = ["%s"]\nheartbeat_interval = 2\nreachability_private = true\n' "$KEY" >"$W/entrance.toml"
printf 'log_file = false\n[box]\nentrances = ["%s"]\njoin_token = "steering-bench-join"\npublisher_keys = ["%s"]\nheartbeat_interval = 2\nmax_ttl = "2h"\n' "$EWS" "$KEY" >"$W/box.toml"
printf 'log_file = false\n[publisher]\nentrances = ["%s"]\nsearch_interval = 1\nmax_ttl = "2h"\n' "$EWS" >"$W/publisher.toml"
start_bg "$W/entrance.out" "" "$BIN" --config "$W/entrance.toml" --data-dir "$W/entrance" --log-level warn entrance --listen "127.0.0.1:$E"
wait_http "http://127.0.0.1:$E/healthz" 20 "$STARTED_PID" '^200$' || die "the entrance did not start: $(cat "$W/entrance.out")"
start_bg "$W/box.out" "" "$BIN" --config "$W/box.toml" --data-dir "$W/box" --log-level warn box --listen "127.0.0.1:$B"
start_bg "$W/publisher.out" "" "$BIN" --config "$W/publisher.toml" --data-dir "$W/publisher" --log-level warn publisher --listen "127.0.0.1:$P"
PUB=$STARTED_PID
PURL="http://127.0.0.1:$P"
wait_http "$PURL/healthz" 20 "$PUB" '^200$' || die "the publisher did not start: $(cat "$W/publisher.out")"
for _ in $(seq 120); do
  curl -fsS "$PURL/healthz" | grep -q '"known_boxes":1' && break
  sleep 0.5
done
curl -fsS "$PURL/healthz" | grep -q '"known_boxes":1' || die "the publisher does not see the box after 60 s"

# A live window as ffmpeg writes one: 6 segments of 2 s, then the playlist.
SRC="$W/live"; mkdir -p "$SRC"
{
  printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1000\n'
  for i in $(seq 1000 1005); do
    head -c 200000 /dev/urandom >"$SRC/seg$i.ts"
    printf '#EXTINF:2.000000,\nseg%s.ts\n' "$i"
  done
} >"$SRC/index.m3u8"
push() { "$BIN" --log-level warn push "$SRC/$1" --as "live/$1" --ttl 2h --replicas 1 --to "$PURL" \
  --token "$(cat "$W/publisher/admin.token")" >/dev/null; }
for i in $(seq 1000 1005); do push "seg$i.ts"; done
push index.m3u8

# The manifest lists the box once it holds the whole window.
MANIFEST_PATH=/dandelion/steering/live/index.m3u8
PATHWAY_PATH=""
for _ in $(seq 100); do
  PATHWAY_PATH=$(curl -fsS "$PURL$MANIFEST_PATH" | python3 -c '
import json, sys, urllib.parse as u
m = json.load(sys.stdin)
for c in m.get("PATHWAY-CLONES", []):
    print(u.urlsplit(c["URI-REPLACEMENT"]["PER-VARIANT-URIS"]["main"]).path); break' 2>/dev/null || true)
  [[ -n "$PATHWAY_PATH" ]] && curl -fsS "$PURL$PATHWAY_PATH" | grep -q "127.0.0.1:$B" && break
  sleep 0.2
done
[[ -n "$PATHWAY_PATH" ]] || die "no box pathway in the manifest after 20 s: $(curl -sS "$PURL$MANIFEST_PATH")"
curl -fsS "$PURL$PATHWAY_PATH" | grep -q "127.0.0.1:$B" || die "the pathway playlist names no segment on the box"

declare -A PATHS=([steer]=/dandelion/steer/live/index.m3u8 [manifest]=$MANIFEST_PATH [pathway]=$PATHWAY_PATH)
GROUPS_RUN=(pathway manifest steer)
DIR="$W/www"
for g in "${GROUPS_RUN[@]}"; do
  mkdir -p "$DIR$(dirname "${PATHS[$g]}")"
  curl -fsS -o "$DIR${PATHS[$g]}" "$PURL${PATHS[$g]}"
  log "$g ${PATHS[$g]}: $(stat -c %s "$DIR${PATHS[$g]}") bytes"
done
chmod -R a+rX "$DIR"
d="$DIR"; while [[ "$d" != / ]]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
NGINX_PORT=$(free_port)
start_nginx "$NGINX_PORT" static "$DIR" ""; NGINX_PID=$STARTED_PID
NGINX_BASE="http://127.0.0.1:$NGINX_PORT"
wait_http "$NGINX_BASE${PATHS[pathway]}" 10 "$NGINX_PID" '^200$' || die "nginx did not come up"
for g in "${GROUPS_RUN[@]}"; do
  [[ "$(curl -fsS "$PURL${PATHS[$g]}" | sha256sum)" == "$(curl -fsS "$NGINX_BASE${PATHS[$g]}" | sha256sum)" ]] \
    || die "the publisher's $g answer changed between two requests; nothing to compare nginx with"
done
PGID="$(ps -o pgid= -p "$PUB" | tr -d ' ')"
log "wrk -t$THREADS -c$CONNS -d${DUR}s, $ROUNDS round(s) A/B per answer, warm-up ${WARM}s, other load before start $(background_busy) of all CPUs"

RES="$W/results.tsv"; : >"$RES"
CPU0=$(cpu_snapshot)
run_one() {   # run_one GROUP SERVER ROUND DURATION
  local g="$1" srv="$2" r="$3" dur="$4" base pg out c0
  if [[ "$srv" == candidate ]]; then base="$PURL"; pg="$PGID"; else base="$NGINX_BASE"; pg="$NGINX_PID"; fi
  out="$W/wrk-$g-$srv-$r.txt"
  c0=$(pgrp_cpu_ticks "$pg")
  run_wrk "$out" "$dur" "$CONNS" "$THREADS" "" "$base" "${PATHS[$g]}" || die "wrk run failed ($srv $g)"
  (( r == 0 )) && return 0
  python3 "$SHARED/lib/wrkline.py" "$out" "$RES" "$g" "$srv" "$r" "$(( $(pgrp_cpu_ticks "$pg") - c0 ))" "$CLK_TCK"
}
for g in "${GROUPS_RUN[@]}"; do
  run_one "$g" candidate 0 "$WARM"; run_one "$g" nginx 0 "$WARM"
  for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then run_one "$g" candidate "$r" "$DUR"; run_one "$g" nginx "$r" "$DUR"
    else run_one "$g" nginx "$r" "$DUR"; run_one "$g" candidate "$r" "$DUR"; fi
  done
done
log "machine during runs: $(cpu_report "$CPU0" "$(cpu_snapshot)")"
kill -0 "$PUB" 2>/dev/null || log "WARNING: the publisher exited during the run"
python3 "$SHARED/lib/summarize.py" "$RES" serve

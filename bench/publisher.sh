#!/usr/bin/env bash
# bench/publisher.sh — the publisher's performance figures for docs/performance.md
# (issue 6), on a real local network: one entrance, three boxes and one publisher,
# each its own `dandelion` process on the embedded store, on 127.0.0.1.
#
#  1. a 1 GiB file pushed (PUT streamed from disk) until placed on a box: time, and
#     peak RSS (VmHWM) of the publisher and of the box that received it; the
#     baseline is the same bytes copied over a plain loopback TCP connection, run
#     just before and just after the push;
#  2. push-to-placed latency of 100 KiB segments pushed one after another: from the
#     202 of PUT /api/files/{name} until GET /api/files/{name} says placed (client,
#     polled every 2 ms), and from the publisher's own `accepted` to `placed` log
#     lines (its own clock, no polling);
#  3. throughput: 1 000 segments of 100 KiB, 16 pushes in flight, over the 3 boxes;
#  4. redirects per second side by side with nginx's `return 302`
#     (../shared/bench/redirect-vs-nginx.sh), for names placed in step 2;
#  5. redirect latency at a steady RATE (default 10 000/s), open loop
#     (`publisher_bench rate`).
#
# Usage: bench/publisher.sh [--skip-big] [--skip-redirects] [--latency-count N] [--count N]
#                           [--concurrency C]
#                           [extra redirect-vs-nginx.sh options after --]
#        PUB_EXTRA='store_files_up_to = 0\n' bench/publisher.sh ...  adds lines to the
#        publisher's [publisher] section, to compare settings in the same conditions.
#        DANDELION_BIN=/path/to/dandelion bench/publisher.sh ...  runs another build,
#        to compare builds in the same sitting.
#        BOXES_DIR=/dev/shm/boxes bench/publisher.sh ...  puts the boxes' data
#        directories there (the rest stays in the work directory): to tell the
#        boxes' disk costs from the publisher's.
# Needs: cargo build --release -p dandelion-daemons --bin dandelion --example publisher_bench;
#        nginx, wrk, curl, python3. Run time about 2.5 minutes; needs ~3.5 GiB in /tmp
#        (or in BENCH_DIR, where the work directory goes when it is set).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED_BENCH:-$ROOT/../shared/bench}"
# shellcheck source=/dev/null
source "$SHARED/lib/common.sh"
BIN="${DANDELION_BIN:-$ROOT/target/release/dandelion}"; TOOL="$ROOT/target/release/examples/publisher_bench"
[[ -x "$BIN" && -x "$TOOL" ]] || die "build first: cargo build --release -p dandelion-daemons --bin dandelion --example publisher_bench"
BIG=1; REDIRECTS=1; LAT_COUNT=200; TP_COUNT=1000; CONC=16
while (( $# )); do
  case "$1" in
    --skip-big) BIG=0; shift;;
    --skip-redirects) REDIRECTS=0; shift;;
    --latency-count) LAT_COUNT="$2"; shift 2;;
    --count) TP_COUNT="$2"; shift 2;;
    --concurrency) CONC="$2"; shift 2;;
    --) shift; break;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown argument: $1 (see --help)";;
  esac
done
need nginx wrk curl python3 setsid
bench_init pub-bench
# Every copy of every file lives in the work directory, /tmp unless BENCH_DIR
# names another. File creation there is the largest cost per segment, and on
# the shared machine these figures come from it is not steady: 19-740 us per
# create of an empty file, depending on the history of the block group the
# directory lands in (ext4 without a journal skips inodes freed in the last
# 30 s, and the disk is shared). See docs/performance.md, "Issue 17".
if [[ -n "${BENCH_DIR:-}" ]]; then
  mkdir -p "$BENCH_DIR"
  rmdir "$BENCH_WORK"
  BENCH_WORK="$(mktemp -d "$BENCH_DIR/pub-bench.XXXXXX")"
fi
W="$BENCH_WORK"
BOXES="$W"
if [[ -n "${BOXES_DIR:-}" ]]; then
  mkdir -p "$BOXES_DIR"
  BOXES="$(mktemp -d "$BOXES_DIR/boxes.XXXXXX")"
  trap 'bench_cleanup; rm -rf "$BOXES"' EXIT   # after the boxes are stopped
fi

rss() { awk -v k="$2:" '$1 == k {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }
machine() { log "machine during $1: $(cpu_report "$2" "$(cpu_snapshot)")"; }

log "dandelion $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), other load before start $(background_busy) of all CPUs"

E=$(free_port); P=$(free_port); BP=(); for _ in 1 2 3; do BP+=("$(free_port)"); done
"$BIN" --data-dir "$W/publisher" id publisher >"$W/publisher.id"
KEY=$(awk '/public key/ {print $3}' "$W/publisher.id"); PUB_ID=$(awk '/^id/ {print $2}' "$W/publisher.id")
JOIN=bench-join-token
# Boxes and the publisher pin the entrance's ID (docs/operations.md).
EID=$("$BIN" --data-dir "$W/entrance" id entrance | awk '/^id/ {print $2}')
EWS="ws://127.0.0.1:$E/dandelion/ws#$EID"
printf 'log_file = false\n[entrance]\njoin_token = "%s"\npublisher_keys = ["%s"]\nheartbeat_interval = 2\nreachability_private = true\nnew_boxes_per_address_per_hour = 0\n' \
  "$JOIN" "$KEY" >"$W/entrance.toml"
printf 'log_file = false\n[box]\nentrances = ["%s"]\njoin_token = "%s"\npublisher_keys = ["%s"]\nheartbeat_interval = 2\nmax_ttl = "2h"\n' \
  "$EWS" "$JOIN" "$KEY" >"$W/box.toml"
# The publisher logs at info to its dandelion.log: its `accepted` and `placed` lines
# carry its own microsecond timestamps.
printf '[publisher]\nentrances = ["%s"]\nsearch_interval = 1\nmax_ttl = "2h"\n%b' "$EWS" "${PUB_EXTRA:-}" >"$W/publisher.toml"

start_bg "$W/entrance.out" "" "$BIN" --config "$W/entrance.toml" --data-dir "$W/entrance" --log-level warn entrance --listen "127.0.0.1:$E"
wait_http "http://127.0.0.1:$E/healthz" 20 "$STARTED_PID" '^200$' || die "the entrance did not start: $(cat "$W/entrance.out")"
BOX_PIDS=()
for i in 0 1 2; do
  start_bg "$W/box-$i.out" "" "$BIN" --config "$W/box.toml" --data-dir "$BOXES/box-$i" --log-level warn box --listen "127.0.0.1:${BP[$i]}"
  BOX_PIDS+=("$STARTED_PID")
done
start_bg "$W/publisher.out" "" "$BIN" --config "$W/publisher.toml" --data-dir "$W/publisher" --log-level info publisher --listen "127.0.0.1:$P"
PUB=$STARTED_PID
PURL="http://127.0.0.1:$P"; TOKEN_FILE="$W/publisher/admin.token"
# The publisher's /api/ lists boxes' data URLs: admin token only.
admin_curl() { curl -s -H "Authorization: Bearer $(cat "$TOKEN_FILE")" "$@"; }
wait_http "$PURL/healthz" 20 "$PUB" '^200$' || die "the publisher did not start: $(cat "$W/publisher.out")"
for _ in $(seq 120); do
  n=$(admin_curl "$PURL/api/ranking" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  (( n >= 3 )) && break; sleep 0.5
done
(( n >= 3 )) || die "the publisher sees $n of 3 boxes after 60 s"
sleep 3
log "network up: entrance :$E, boxes :${BP[*]}, publisher :$P ($PUB_ID)"
echo "idle RSS: publisher $(rss "$PUB" VmRSS), boxes $(for b in "${BOX_PIDS[@]}"; do printf '%s, ' "$(rss "$b" VmRSS)"; done | sed 's/, $//')"

box_of_port() { local i; for i in 0 1 2; do if [[ "$1" == "${BP[$i]}" ]]; then echo "${BOX_PIDS[$i]}"; fi; done; }

if (( BIG )); then
  head -c $((1024 * 1024 * 1024)) /dev/urandom >"$W/big.bin"
  mkdir -p "$W/sink"
  # The baseline runs twice before and twice after the push; the median of the four
  # is what the push is compared with (the machine is shared and noisy).
  baseline() { "$TOOL" tcp --file "$W/big.bin" --sink discard; "$TOOL" tcp --file "$W/big.bin" --sink "$W/sink"; }
  M0=$(cpu_snapshot)
  { baseline; baseline; } | tee -a "$W/tcp.txt"
  "$TOOL" big --to "$PURL" --token-file "$TOKEN_FILE" --file "$W/big.bin" --name big/file.bin --ttl 1800 --timeout 300 | tee "$W/big.txt"
  { baseline; baseline; } | tee -a "$W/tcp.txt"
  machine "the 1 GiB phase" "$M0"
  python3 - "$W/tcp.txt" "$W/big.txt" <<'EOF'
import re, statistics, sys
tcp = {"discard": [], "file": []}
for line in open(sys.argv[1]):
    m = re.search(r"-> (discard|file).* ([0-9.]+) MB/s", line)
    if m: tcp[m.group(1)].append(float(m.group(2)))
big = open(sys.argv[2]).read()
e2e = float(re.search(r"end to end [0-9.]+ s \(([0-9.]+) MB/s", big).group(1))
put = float(re.search(r"PUT until 202 [0-9.]+ s \(([0-9.]+) MB/s", big).group(1))
place = float(re.search(r"202 until placed [0-9.]+ s \(([0-9.]+) MB/s", big).group(1))
d, f = statistics.median(tcp["discard"]), statistics.median(tcp["file"])
print(f"1 GiB share of plain loopback TCP: end to end {e2e:.0f} MB/s = {e2e/d:.2f}x of TCP to discard "
      f"(median {d:.0f} MB/s, runs {min(tcp['discard']):.0f}-{max(tcp['discard']):.0f}), {e2e/f:.2f}x of TCP to file+fsync "
      f"(median {f:.0f} MB/s, runs {min(tcp['file']):.0f}-{max(tcp['file']):.0f}); "
      f"intake alone {put/f:.2f}x, placement alone {place/f:.2f}x of TCP to file+fsync")
EOF
  port=$(admin_curl "$PURL/api/files/big/file.bin" | python3 -c 'import json,sys,urllib.parse as u; print(u.urlsplit(json.load(sys.stdin)["placements"][0]["url"]).port)')
  bp=$(box_of_port "$port")
  echo "after 1 GiB: publisher peak $(rss "$PUB" VmHWM) (now $(rss "$PUB" VmRSS)); receiving box :$port peak $(rss "$bp" VmHWM) (now $(rss "$bp" VmRSS))"
  rm -f "$W/big.bin"
fi

# The publisher's own view: `accepted` → `placed` per name from its log (UTC, µs).
from_log() {   # from_log PREFIX LABEL
  python3 - "$W/publisher/dandelion.log" "$1" "$2" <<'EOF'
import re, sys, datetime as dt
log, prefix, label = sys.argv[1:4]
pat = re.compile(r'^(\S+)\s+INFO\s+\S+: (accepted|placed) file=(\S+)')
acc, plc = {}, {}
for line in open(log, errors="replace"):
    m = pat.match(line)
    if not m or not m.group(3).startswith(prefix + "/"): continue
    t = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
    (acc if m.group(2) == "accepted" else plc).setdefault(m.group(3), t)
ms = sorted((plc[n] - acc[n]) * 1e3 for n in acc if n in plc)
if not ms: sys.exit(f"no accepted/placed pairs for {prefix} in {log}")
pc = lambda p: ms[max(1, min(len(ms), -(-len(ms) * p // 100))) - 1]
span = max(plc.values()) - min(acc.values())
print(f"{label} (publisher log, accepted -> placed): n {len(ms)} p50 {pc(50):.1f} ms p90 {pc(90):.1f} ms "
      f"p99 {pc(99):.1f} ms max {ms[-1]:.1f} ms; first accepted -> last placed {span:.2f} s"
      + (f" = {len(ms)/span:.0f} files/s" if span > 0 else ""))
EOF
}

M0=$(cpu_snapshot)
"$TOOL" latency --to "$PURL" --token-file "$TOKEN_FILE" --count "$LAT_COUNT" --prefix bench/lat --poll-ms 2 --ttl 1800 | tee "$W/latency.txt" | grep -v '^names:'
machine "the latency phase" "$M0"
from_log bench/lat "latency, one at a time"

per_box() {   # per_box PREFIX: how many of the files under PREFIX each box holds
  admin_curl "$PURL/api/files" | python3 -c '
import json, sys, collections
c = collections.Counter(pl["url"].split("/")[2] for j in json.load(sys.stdin) if j["name"].startswith(sys.argv[1] + "/") for pl in j["placements"])
print(f"{sys.argv[1]} files per box:", ", ".join(f"{k} {v}" for k, v in sorted(c.items())))' "$1"
}
per_box bench/lat

M0=$(cpu_snapshot)
"$TOOL" throughput --to "$PURL" --token-file "$TOKEN_FILE" --count "$TP_COUNT" --concurrency "$CONC" --prefix bench/tp --poll-ms 5 --ttl 1800
machine "the throughput phase" "$M0"
from_log bench/tp "throughput, $CONC in flight"
per_box bench/tp
admin_curl "$PURL/api/ranking" | python3 -c '
import json, sys
print("ranking now:", "; ".join("%s score %.2f (reliability %.2f, throughput %.2f)" % (r["box"][:16], r["score"], r["reliability"], r["throughput"]) for r in json.load(sys.stdin)))'
echo "after the segments: publisher peak $(rss "$PUB" VmHWM) (now $(rss "$PUB" VmRSS)), boxes now $(for b in "${BOX_PIDS[@]}"; do printf '%s, ' "$(rss "$b" VmRSS)"; done | sed 's/, $//')"

(( REDIRECTS )) || exit 0
# Redirects: four placed segments, and nginx redirecting to the same shape of URL.
NAMES=$(sed -n 's/^names: //p' "$W/latency.txt" | cut -d, -f1-4)
bash "$SHARED/redirect-vs-nginx.sh" --candidate-url-prefix "$PURL" --candidate-pid "$PUB" \
  --names "$NAMES" --target "http://127.0.0.1:${BP[0]}/$PUB_ID" "$@"

# Redirects at a steady rate (RATE, default 10 000/s), open loop: the latency a
# viewer sees while the publisher is loaded but not saturated.
M0=$(cpu_snapshot)
"$TOOL" rate --to "$PURL" --names "$NAMES" --rate "${RATE:-10000}" --seconds 10 --connections 64
machine "the steady-rate redirects" "$M0"

#!/usr/bin/env bash
# bench/console.sh — the console's performance figures for docs/performance.md
# ("Console"): frame time with 10 000 boxes (baseline: 10 boxes), CPU while idle
# on a steady `dandelion up` network, and key-press latency while a fake entrance
# pushes 2 000 updates/s (baseline: the same feed idle). Everything on loopback.
#
# Usage: bench/console.sh [render|idle|keys]...   (default: all three)
# Needs: a release build:
#   cargo build --release -p dandelion-console --bin dandelion-console \
#       --example render_bench --example console_bench \
#       -p dandelion-daemons --bin dandelion --example console_feed
# `idle` runs `dandelion up` on its fixed ports 7070, 7072 and 7081-7083: they must be free.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
T="${CARGO_TARGET_DIR:-$ROOT/target}/release"
for f in "$T/dandelion" "$T/dandelion-console" "$T/examples/render_bench" "$T/examples/console_bench" "$T/examples/console_feed"; do
  [[ -x "$f" ]] || { echo "missing $f; build first (see the top of $0)" >&2; exit 1; }
done
STEPS=("$@"); [[ ${#STEPS[@]} -gt 0 ]] || STEPS=(render idle keys)
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"

for step in "${STEPS[@]}"; do
  case "$step" in
  render)
    echo "== frame time (render_bench)"
    "$T/examples/render_bench" --frames 300
    ;;
  idle)
    echo "== CPU while idle (console_bench idle, dandelion up with 3 boxes)"
    if ss -ltn | grep -qE ':(7070|7072|708[1-3]) '; then
      echo "a port of 7070, 7072, 7081-7083 is taken; is another \`dandelion up\` running?" >&2; exit 1
    fi
    WORK="$(mktemp -d /tmp/console-bench.XXXXXX)"
    "$T/dandelion" --data-dir "$WORK/net" --log-level warn up --boxes 3 >"$WORK/up.log" 2>&1 &
    UP=$!
    trap 'kill "$UP" 2>/dev/null || true; wait "$UP" 2>/dev/null || true; rm -rf "$WORK"' EXIT
    for _ in $(seq 300); do [[ -e "$WORK/net/network.toml" ]] && break; sleep 0.1; done
    # The network settles (boxes registered, first heartbeats) before measuring.
    sleep 5
    "$T/examples/console_bench" idle --console "$T/dandelion-console" --data-dir "$WORK/net" \
      --up-pid "$UP" --boxes 3 --seconds 30
    kill "$UP"; wait "$UP" 2>/dev/null || true; rm -rf "$WORK"; trap - EXIT
    ;;
  keys)
    echo "== key latency (console_bench keys against console_feed)"
    "$T/examples/console_bench" keys --console "$T/dandelion-console" --feed "$T/examples/console_feed" \
      --boxes 2000 --rate 2000 --samples 150
    ;;
  *) echo "unknown step $step (render, idle or keys)" >&2; exit 1 ;;
  esac
done

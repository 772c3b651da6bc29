#!/usr/bin/env bash
# bench/all.sh — every efficiency target of issue 17 in one run, as the default
# release build does them, then one table: figure, value, target, met or not.
#
#   bench/box.sh                 the box against nginx (100 KiB, 1 MiB), CPU per
#                                request, idle RSS
#   bench/publisher.sh           a 1 GiB push against loopback TCP into a file +
#                                fsync, peak RSS, push->placed latency, 1 000
#                                segments 16 in flight
#   bench/entrance-tls.sh        18 000 boxes heartbeating every 4.5 s (4 000/s),
#                                plain ws://, embedded store; and on Redis when
#                                redis-server is installed
#
# Each script measures its own baseline in the same run (nginx, plain TCP) or
# compares with an absolute target; this one only runs them and reads their
# output, which it keeps in the directory it prints. About 8 minutes.
#
# Usage: bench/all.sh
# Needs: cargo build --release -p dandelion-daemons --bin dandelion --bin dandelion-box \
#          --example box_push --example publisher_bench --example entrance_load;
#        nginx, wrk, curl, python3, openssl; redis-server for the Redis row.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mktemp -d /tmp/bench-all.XXXXXX)"
echo "# bench/all.sh $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); outputs in $OUT"

run() {   # run NAME COMMAND...: its output to $OUT/NAME.txt, a line when done
  local name=$1; shift
  echo "== $name: $*"
  if ! "$@" >"$OUT/$name.txt" 2>&1; then
    echo "   $name failed; see $OUT/$name.txt" >&2
  fi
}

run box bash "$ROOT/bench/box.sh"
run publisher bash "$ROOT/bench/publisher.sh"
run entrance env ORDER=plain bash "$ROOT/bench/entrance-tls.sh" --boxes 18000 --interval 4.5 --duration 30
if command -v redis-server >/dev/null; then
  # Loopback only; a port just freed can still be taken (the entrance runs leave
  # 18 000 connections in TIME_WAIT), so a start that does not answer is tried
  # again on another port.
  for _attempt in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes --logfile "$OUT/redis.log" >/dev/null
    up=0
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
    (( up )) && break
  done
  trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true' EXIT
  run entrance-redis env ORDER=plain STORE="redis://127.0.0.1:$port/0" \
    bash "$ROOT/bench/entrance-tls.sh" --boxes 18000 --interval 4.5 --duration 30
fi

python3 - "$OUT" <<'EOF'
import os, re, sys
out = sys.argv[1]
def text(name):
    path = os.path.join(out, name + ".txt")
    return open(path, errors="replace").read() if os.path.exists(path) else ""
rows = []
def row(figure, value, target, met):
    rows.append((figure, value, target, "-" if met is None else ("met" if met else "NOT MET")))
def find(pattern, source, cast=float, group=1):
    m = re.search(pattern, source, re.M)
    return cast(m.group(group)) if m else None

box = text("box")
ratios = [float(x) for x in re.findall(r"ratio candidate/nginx ([0-9.]+) =", box)]
cpus = [float(x) for x in re.findall(r"cpu per request candidate/nginx ([0-9.]+)", box)]
for i, size in enumerate(["100 KiB", "1 MiB"]):
    r = ratios[i] if i < len(ratios) else None
    c = cpus[i] if i < len(cpus) else None
    row(f"box serving {size}, req/s vs nginx", f"{r:.2f}x" if r else "?", ">= 1.0x", r is not None and r >= 1.0)
    row(f"box serving {size}, CPU/request vs nginx", f"{c:.2f}x" if c else "?", "<= 1.5x", c is not None and c <= 1.5)
idle = find(r"^idle: VmRSS:\s+([0-9]+) kB", box)
row("box idle RSS", f"{idle/1024:.1f} MiB" if idle else "?", "< 10 MiB", idle is not None and idle < 10 * 1024)

pub = text("publisher")
share = find(r"([0-9.]+)x of TCP to file\+fsync", pub)
row("1 GiB push, PUT to placed, vs TCP to file+fsync", f"{share:.2f}x" if share else "?", ">= 0.5x", share is not None and share >= 0.5)
peaks = re.search(r"publisher peak ([0-9.]+) MiB.*receiving box \S+ peak ([0-9.]+) MiB", pub)
if peaks:
    p, b = float(peaks.group(1)), float(peaks.group(2))
    row("1 GiB push, peak RSS publisher / box", f"{p:.0f} / {b:.0f} MiB", "<= 64 MiB", max(p, b) <= 64)
else:
    row("1 GiB push, peak RSS publisher / box", "?", "<= 64 MiB", False)
tput = find(r"^throughput, 16 in flight.* = ([0-9]+) files/s", pub)
row("100 KiB segments placed, 16 in flight, 3 boxes", f"{tput:.0f} files/s" if tput else "?", ">= 1000 files/s", tput is not None and tput >= 1000)
p50 = find(r"^latency, one at a time.* p50 ([0-9.]+) ms", pub)
row("push -> placed p50, one in flight", f"{p50:.1f} ms" if p50 else "?", "<= 5 ms", p50 is not None and p50 <= 5)

for name, label in [("entrance", "embedded"), ("entrance-redis", "Redis")]:
    ent = text(name)
    if not ent:
        continue
    held = find(r"^heartbeats/s:\s+([0-9]+) held", ent)
    p99 = find(r"^reply p99:\s+([0-9.]+) ms", ent)
    # The load tool's own pacing lands within a per cent of its target rate.
    row(f"entrance heartbeats, 18 000 boxes, {label}", f"{held:.0f}/s" if held else "?", "4 000/s", held is not None and held >= 3960)
    row(f"entrance reply p99, {label}", f"{p99:.1f} ms" if p99 is not None else "?", "< 50 ms", p99 is not None and p99 < 50)

w = max(len(r[0]) for r in rows)
print(f"\n{'figure':<{w}}  {'value':>16}  {'target':>16}  result")
for f, v, t, m in rows:
    print(f"{f:<{w}}  {v:>16}  {t:>16}  {m}")
EOF

#!/usr/bin/env bash
# bench/box-tls.sh — a box serving viewers over https against the same over
# plain http, in one run, for docs/performance.md ("TLS (issue 13)").
#
# Two boxes of one build (dandelion-box, as bench/box.sh starts it): P without a
# certificate (viewers on http://, its usual life) and T with tls_cert/tls_key
# from a private CA made here with openssl (ECDSA P-256, IP SAN 127.0.0.1;
# viewers on https://). Both hold the same files (bench/box.sh's: 4 of 100 KiB,
# 4 of 1 MiB), pushed with box_push (to T over wss://), and both are checked to
# serve them byte for byte. Then wrk (64 connections, 2 threads, keep-alive, so
# TLS handshakes are few) runs against T and P in alternating order, ROUNDS
# rounds of DUR seconds per size: P is the baseline measured in the same run,
# so the headline is the median of the per-round ratios https/http, with each
# box's CPU per request. The same is measured for nginx (one instance over
# http, one over https with the same certificate; the shared tuned config) in
# the same rounds, as a reference for what TLS costs a server that is not ours,
# and the two https sides are set against each other (box/nginx over TLS).
# It reuses ../shared/bench's nginx config, wrk driver and summary
# (serve-vs-nginx.sh itself takes http:// only).
#
# Usage: [BOX_BIN=path] [ROUNDS=5] [DUR=2] bench/box-tls.sh
# Needs: cargo build --release -p dandelion-daemons --bin dandelion --bin dandelion-box --example box_push,
# nginx, wrk, curl, openssl, python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LIB="$ROOT/../shared/bench/lib"
BIN="$ROOT/target/release/dandelion"
BOX_BIN="${BOX_BIN:-$ROOT/target/release/dandelion-box}"
PUSH="$ROOT/target/release/examples/box_push"
ROUNDS="${ROUNDS:-5}"; DUR="${DUR:-2}"
source "$ROOT/../shared/bench/lib/common.sh"
need nginx wrk curl openssl python3 setsid sha256sum
for f in "$BIN" "$BOX_BIN" "$PUSH"; do
  [[ -x "$f" ]] || { echo "build first: cargo build --release -p dandelion-daemons --bin dandelion --bin dandelion-box --example box_push" >&2; exit 1; }
done
bench_init box-tls; WORK="$BENCH_WORK"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$WORK/box.key" -out "$WORK/box.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$WORK/leaf.ext"
openssl x509 -req -in "$WORK/box.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/box.crt" 2>/dev/null
export CURL_CA_BUNDLE="$WORK/ca.pem"

KEY=$("$BIN" --data-dir "$WORK/pub" id publisher | awk '/public key/ {print $3}')
PUB_ID=$("$BIN" --data-dir "$WORK/pub" id publisher | awk '/^id/ {print $2}')
mkdir -p "$WORK/www"
for s in 100k 1m; do for i in 1 2 3 4; do
  case $s in 100k) n=$((100*1024));; 1m) n=$((1024*1024));; esac
  head -c $n /dev/urandom >"$WORK/www/bench-$s-$i.bin"
done; done

declare -A PORT PID URL PREFIX
for kind in plain tls; do
  data="$WORK/$kind"
  PORT[$kind]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  id=$("$BIN" --data-dir "$data" id box | awk '/^id/ {print $2}')
  printf '[box]\npublisher_keys = ["%s"]\nmax_ttl = "2h"\n' "$KEY" >"$WORK/$kind.toml"
  scheme=http; ws=ws
  if [[ $kind == tls ]]; then
    printf 'tls_cert = "%s"\ntls_key = "%s"\n' "$WORK/box.crt" "$WORK/box.key" >>"$WORK/$kind.toml"
    scheme=https; ws=wss
  fi
  start_bg "$WORK/$kind.err" "" "$BOX_BIN" --config "$WORK/$kind.toml" --data-dir "$data" --log-level warn \
    --listen "127.0.0.1:${PORT[$kind]}"
  PID[$kind]=$STARTED_PID
  for _ in $(seq 100); do curl -sf "$scheme://127.0.0.1:${PORT[$kind]}/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "$scheme://127.0.0.1:${PORT[$kind]}/healthz" >/dev/null || { echo "the $kind box did not start: $(cat "$WORK/$kind.err")" >&2; exit 1; }
  "$PUSH" --key-dir "$WORK/pub" --ca "$WORK/ca.pem" --to "$ws://127.0.0.1:${PORT[$kind]}/dandelion/ws#$id" \
    --prefix /bench --ttl 7200 "$WORK"/www/*.bin >/dev/null
  URL[$kind]="$scheme://127.0.0.1:${PORT[$kind]}"
  for f in "$WORK"/www/*.bin; do
    got=$(curl -sf --max-time 10 "${URL[$kind]}/$PUB_ID/bench/$(basename "$f")" | sha256sum | cut -c1-64)
    [[ "$got" == "$(sha256sum <"$f" | cut -c1-64)" ]] || die "the $kind box served other bytes for $(basename "$f")"
  done
done

# nginx with the same files over http and over https (same certificate), as a
# reference for what TLS costs a server that is not the box: its plain side
# uses sendfile, its TLS side cannot (no kernel TLS here).
for kind in nginx-plain nginx-tls; do
  PORT[$kind]=$(free_port); conf="$WORK/$kind.conf"
  nginx_conf "$conf" "${PORT[$kind]}" static "$WORK/www"
  sed -i "s|pid .*|pid $WORK/$kind.pid;|" "$conf"
  if [[ $kind == nginx-tls ]]; then
    sed -i "s|listen 127.0.0.1:${PORT[$kind]} reuseport backlog=4096;|listen 127.0.0.1:${PORT[$kind]} ssl reuseport backlog=4096; ssl_certificate $WORK/box.crt; ssl_certificate_key $WORK/box.key;|" "$conf"
    URL[$kind]="https://127.0.0.1:${PORT[$kind]}"
  else
    URL[$kind]="http://127.0.0.1:${PORT[$kind]}"
  fi
  chmod -R a+rX "$WORK"
  start_bg "$WORK/$kind.out" "" nginx -e "$WORK/$kind-error.log" -c "$conf" -g 'daemon off;'
  PID[$kind]=$STARTED_PID
  wait_http "${URL[$kind]}/bench-1m-1.bin" 10 "${PID[$kind]}" '^200$' || die "$kind did not come up: $(cat "$WORK/$kind"-error.log)"
done
PREFIX[plain]="/$PUB_ID/bench"; PREFIX[tls]="/$PUB_ID/bench"; PREFIX[nginx-plain]=""; PREFIX[nginx-tls]=""
log "http box ${URL[plain]}, https box ${URL[tls]}, nginx ${URL[nginx-plain]} and ${URL[nginx-tls]}; wrk -t2 -c64 -d${DUR}s, $ROUNDS rounds per size and pair, load $(cut -d' ' -f1-3 /proc/loadavg), other load before start $(background_busy) of all CPUs"

# Each pair's https side takes the shared summary's "candidate" slot, its http
# side the "nginx" one; the labels are rewritten when printed.
RES_BOX="$WORK/box.tsv"; RES_NGINX="$WORK/nginx.tsv"; RES_TLS="$WORK/tls.tsv"
: >"$RES_BOX"; : >"$RES_NGINX"; : >"$RES_TLS"
CPU0=$(cpu_snapshot)
run_one() {   # run_one SIZE KIND ROUND DURATION
  local s="$1" kind="$2" r="$3" d="$4" out="$WORK/wrk-$1-$2-$3.txt" paths=() c0 res slot
  for f in "$WORK"/www/bench-"$s"-*.bin; do paths+=("${PREFIX[$kind]}/$(basename "$f")"); done
  c0=$(pgrp_cpu_ticks "${PID[$kind]}")
  run_wrk "$out" "$d" 64 2 "" "${URL[$kind]}" "${paths[@]}" || die "wrk failed ($kind $s)"
  (( r == 0 )) && return 0
  case $kind in nginx-*) res="$RES_NGINX";; *) res="$RES_BOX";; esac
  case $kind in *tls) slot=candidate;; *) slot=nginx;; esac
  local cpu=$(( $(pgrp_cpu_ticks "${PID[$kind]}") - c0 ))
  # Each round's line, under this script's name for the server.
  python3 "$LIB/wrkline.py" "$out" "$res" "$s" "$slot" "$r" "$cpu" "$CLK_TCK" 2>&1 \
    | sed "s/ $slot / $kind /"
  # And the two https servers against each other: the box over TLS vs nginx over TLS.
  case $kind in
    tls) python3 "$LIB/wrkline.py" "$out" "$RES_TLS" "$s" candidate "$r" "$cpu" "$CLK_TCK" >/dev/null 2>&1;;
    nginx-tls) python3 "$LIB/wrkline.py" "$out" "$RES_TLS" "$s" nginx "$r" "$cpu" "$CLK_TCK" >/dev/null 2>&1;;
  esac
}
for s in 100k 1m; do
  for kind in tls plain nginx-tls nginx-plain; do run_one "$s" "$kind" 0 1; done
  for r in $(seq 1 "$ROUNDS"); do
    # alternate who goes first so a position effect cancels out
    if (( r % 2 )); then order="tls plain nginx-tls nginx-plain"; else order="nginx-plain nginx-tls plain tls"; fi
    for kind in $order; do run_one "$s" "$kind" "$r" "$DUR"; done
  done
done
log "machine during runs: $(cpu_report "$CPU0" "$(cpu_snapshot)")"
for kind in plain tls nginx-plain nginx-tls; do
  kill -0 "${PID[$kind]}" 2>/dev/null || log "WARNING: $kind exited during the run"
done
echo "== the box: https against http"
python3 "$LIB/summarize.py" "$RES_BOX" serve 2>&1 | sed 's/candidate/https/g; s/nginx/http/g'
echo "== nginx: https against http"
python3 "$LIB/summarize.py" "$RES_NGINX" serve 2>&1 | sed 's/candidate/https/g; s/nginx/http/g'
echo "== over https: the box against nginx"
python3 "$LIB/summarize.py" "$RES_TLS" serve 2>&1 | sed 's/candidate/box/g'

#!/usr/bin/env bash
# bench/box-idle.sh — an idle box's memory only, started as bench/box.sh starts
# it (one trusted publisher key, file logging on, --log-level warn, VmRSS 3 s
# after /healthz answers), N starts in a row; with --tls the box has a
# certificate (tls_cert/tls_key, a private CA made here with openssl, ECDSA
# P-256) and /healthz is asked over https. With --by-crate, also which crates'
# code is resident (bench/resident-code.py; needs root for /proc/PID/pagemap).
#
# Usage: [DANDELION_BIN=path/to/dandelion] [BOX_BIN=path/to/dandelion-box] bench/box-idle.sh [--tls] [--starts N] [--by-crate]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${DANDELION_BIN:-$ROOT/target/release/dandelion}"
# The box runs as household devices run it: dandelion-box, the box role alone.
# BOX_BIN=path/to/dandelion runs `dandelion box` instead (or an older build).
BOX_BIN="${BOX_BIN:-$ROOT/target/release/dandelion-box}"
BOX_CMD=("$BOX_BIN"); [[ "$(basename "$BOX_BIN")" == dandelion-box ]] || BOX_CMD+=(box)
TLS=0; STARTS=3; BY_CRATE=0
while (( $# )); do
  case "$1" in
    --tls) TLS=1; shift ;;
    --starts) STARTS="$2"; shift 2 ;;
    --by-crate) BY_CRATE=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$BIN" && -x "$BOX_BIN" ]] || { echo "build first: cargo build --release -p dandelion-daemons --bin dandelion --bin dandelion-box" >&2; exit 1; }
WORK="$(mktemp -d /tmp/box-idle.XXXXXX)"; BOX=""
trap '[[ -n "$BOX" ]] && kill "$BOX" 2>/dev/null; rm -rf "$WORK"' EXIT
scheme=http
if (( TLS )); then
  scheme=https
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$WORK/box.key" -out "$WORK/box.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$WORK/leaf.ext"
  openssl x509 -req -in "$WORK/box.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/box.crt" 2>/dev/null
fi
for n in $(seq "$STARTS"); do
  data="$WORK/run-$n"; mkdir -p "$data"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  KEY=$("$BIN" --data-dir "$data/pub" id publisher | awk '/public key/ {print $3}')
  printf '[box]\npublisher_keys = ["%s"]\nmax_ttl = "2h"\n' "$KEY" >"$data/box.toml"
  if (( TLS )); then printf 'tls_cert = "%s"\ntls_key = "%s"\n' "$WORK/box.crt" "$WORK/box.key" >>"$data/box.toml"; fi
  "${BOX_CMD[@]}" --config "$data/box.toml" --data-dir "$data/box" --log-level warn --listen "127.0.0.1:$PORT" 2>"$data/box.err" &
  BOX=$!
  for _ in $(seq 100); do
    if (( TLS )); then curl -sf --cacert "$WORK/ca.pem" "$scheme://127.0.0.1:$PORT/healthz" >/dev/null && break
    else curl -sf "$scheme://127.0.0.1:$PORT/healthz" >/dev/null && break; fi
    sleep 0.1
  done
  sleep 3
  echo "idle ($scheme): $(grep -E 'VmRSS|RssAnon|RssFile' /proc/$BOX/status | tr -s ' \t\n' ' ')"
  if (( BY_CRATE )); then python3 "$ROOT/bench/resident-code.py" "$BOX" --top 40; fi
  kill "$BOX"; wait "$BOX" 2>/dev/null || true; BOX=""
done

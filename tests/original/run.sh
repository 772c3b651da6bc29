#!/usr/bin/env bash
# Interoperability evidence: the ORIGINAL 2017 Dandelion box and publisher
# (peter850421/Dandelion @ 01c92ae, Python 3.6) against a Dandelion entrance.
#
#   tests/original/run.sh               # legacy_peers = true: the full path
#   tests/original/run.sh --legacy-off  # legacy_peers = false: what the box is told
#   options: --keep (keep the temp dir and print its path), --no-netns, -h
#
# Default mode, step by step (each printed PASS / FAIL / SKIP):
#   1. the Dandelion entrance starts (plain ws://, embedded store, temp data dir,
#      legacy_peers = true, legacy_publishers = ["127.0.0.1"] if the binary knows it)
#   2. the original box starts (its run_box.py, unmodified) behind nginx, as the
#      original's compose/box/nginx/nginx.conf: a TLS proxy on the box's "proxy
#      port" answers HI <box-id> at https://127.0.0.1:<proxy>/dandelion/<box-id>/
#   3. nginx's data port serves the box's BASE_DIRECTORY (its box-id.txt)
#   4. the box joins the entrance: /api/boxes lists it, marked legacy
#   5. the original publisher (its run_publisher.py) learns the box from the
#      entrance: its Redis holds <publisher-id>:SEARCH:<box-id>
#   6. the publisher opens its PUBLISH socket to the box (CONNECT_WS, over nginx TLS)
#   7. FileManager.push(path, 60), then FileManager.ask(path) reports
#      MSG: Success with the box's ID
#   8. the box's data port serves the same bytes at
#      http://127.0.0.1:<data port>/<publisher-id><path>
#   9. the original code attempted no connection off this machine
# --legacy-off: steps 1 (legacy_peers = false), 2 (the box's own app port),
#   then: the box's log carries the entrance's explanation, a text containing
#   "legacy"; then 9.
#
# Everything listens on 127.0.0.1 on ports picked at run time, lives in one temp
# dir, and is stopped on exit. Unless --no-netns, the run happens inside a
# private network namespace (unshare -n) with only a loopback interface, so no
# packet can leave the machine whatever the original tries; on top of that the
# Python launcher (original_harness.py) replaces the original's get_ip() (which
# asks public what-is-my-IP services) and refuses and logs any non-loopback
# connection, which step 9 checks for.
#
# Needs: git, tar, curl, openssl, nginx, redis-server, redis-cli, Python 3.6
# (PYTHON36=..., else python3.6 on PATH or under pyenv), PyPI once (a venv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/dandelion-original, reused), and a built
# entrance (DANDELION=..., default target/release/dandelion of this checkout).
# Environment: DANDELION, PYTHON36, ORIGINAL_GIT (the original's git dir),
# STEP_TIMEOUT (seconds each step may take, default 20).
#
# Exit status: 0 all steps passed, 1 a step failed, 2 could not run.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DANDELION=${DANDELION:-$ROOT/target/release/dandelion}
ORIGINAL_GIT=${ORIGINAL_GIT:-/work/.mirror/peter850421+Dandelion/repo/.git}
ORIGINAL_COMMIT=01c92ae
STEP_TIMEOUT=${STEP_TIMEOUT:-20}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/dandelion-original
VENV=$CACHE/venv
HARNESS=$HERE/original_harness.py

MODE=legacy-on
KEEP=0
NETNS=1
for arg in "$@"; do
    case $arg in
        --legacy-off) MODE=legacy-off ;;
        --keep) KEEP=1 ;;
        --no-netns) NETNS=0 ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "run.sh: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------
# Phase 1, on the host's network: prerequisites and the Python 3.6 venv.
# ---------------------------------------------------------------------------
if [[ -z ${ORIGINAL_RUN_INSIDE:-} ]]; then
    for tool in git tar curl openssl nginx redis-server redis-cli; do
        command -v "$tool" >/dev/null || die "missing tool: $tool"
    done
    [[ -x $DANDELION ]] || die "no entrance binary at $DANDELION (build it, or set DANDELION)"
    git --git-dir="$ORIGINAL_GIT" rev-parse -q --verify "$ORIGINAL_COMMIT^{commit}" >/dev/null ||
        die "the original's commit $ORIGINAL_COMMIT is not in $ORIGINAL_GIT (set ORIGINAL_GIT)"

    is_py36() { [[ -n $1 && -x $1 ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 6))' 2>/dev/null; }
    PY36=
    for c in "${PYTHON36:-}" "$(command -v python3.6 || true)" \
        /root/.pyenv/versions/3.6.15/bin/python3.6 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.6*/bin/python3.6; do
        if is_py36 "$c"; then PY36=$c; break; fi
    done
    [[ -n $PY36 ]] || die "no Python 3.6 found (set PYTHON36=/path/to/python3.6)"

    # The venv is rebuilt only when the interpreter or the pins change.
    requirements=$(git --git-dir="$ORIGINAL_GIT" show "$ORIGINAL_COMMIT:requirements.txt")
    stamp=$( { "$PY36" --version 2>&1; echo "$requirements"; cat "$HERE/constraints.txt"; } | sha256sum | cut -c1-16)
    if [[ $(cat "$VENV/.stamp" 2>/dev/null || true) != "$stamp" ]]; then
        echo "== creating the original's Python 3.6 venv in $VENV (once; needs PyPI)"
        mkdir -p "$CACHE"
        rm -rf "$VENV"
        printf '%s\n' "$requirements" >"$CACHE/requirements.txt"
        log=$CACHE/install.log
        # The stamp is written last: an interrupted install is redone next time.
        if ! {
            "$PY36" -m venv "$VENV" &&
                # pip 18 (what 3.6's venv brings) takes pre-releases it should not.
                "$VENV/bin/python" -m pip install --disable-pip-version-check 'pip==21.3.1' &&
                "$VENV/bin/python" -m pip install --disable-pip-version-check \
                    -r "$CACHE/requirements.txt" -c "$HERE/constraints.txt"
        } >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            rm -rf "$VENV"
            die "could not install the original's dependencies (log: $log)"
        fi
        echo "$stamp" >"$VENV/.stamp"
    fi
    "$VENV/bin/python" -c 'import aiohttp, aioredis, redis, yaml, uvloop, colorlog' ||
        die "the venv $VENV is broken; remove it and run again"

    # Into a private network namespace with only loopback, then go on below.
    if [[ $NETNS == 1 ]]; then
        if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
            echo "WARNING: no ip/unshare: running without a private network namespace" >&2
        elif unshare --net true 2>/dev/null; then
            ORIGINAL_RUN_INSIDE=netns exec unshare --net -- "$BASH" "$0" "$@"
        elif unshare --net --map-root-user true 2>/dev/null; then
            ORIGINAL_RUN_INSIDE=netns exec unshare --net --map-root-user -- "$BASH" "$0" "$@"
        else
            echo "WARNING: cannot unshare the network: running without a private namespace" >&2
        fi
    fi
    ORIGINAL_RUN_INSIDE=host
fi

# ---------------------------------------------------------------------------
# Phase 2: the run itself.
# ---------------------------------------------------------------------------
if [[ $ORIGINAL_RUN_INSIDE == netns ]]; then
    ip link set lo up || die "cannot bring up loopback in the network namespace"
fi
PY=$VENV/bin/python
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ next to original_harness.py
START=$(date +%s)

T=$(mktemp -d "${TMPDIR:-/tmp}/dandelion-original.XXXXXX")
declare -A PIDS=()   # name -> pid of a process group this script started
declare -a ORDER=()

cleanup() {
    local rc=$?
    for (( i = ${#ORDER[@]} - 1; i >= 0; i-- )); do
        local pid=${PIDS[${ORDER[$i]}]}
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    # Up to 3 s for a clean stop, then SIGKILL what is left of each group.
    for _ in $(seq 30); do
        local alive=0
        for name in "${ORDER[@]}"; do
            kill -0 -- "-${PIDS[$name]}" 2>/dev/null && alive=1
        done
        (( alive )) || break
        sleep 0.1
    done
    for name in "${ORDER[@]}"; do
        kill -KILL -- "-${PIDS[$name]}" 2>/dev/null || true
    done
    if (( KEEP )); then
        echo "(kept $T)"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME DIR CMD...: CMD in DIR, its own process group, output to $T/logs/NAME.out
start() {
    local name=$1 dir=$2
    shift 2
    mkdir -p "$T/logs"
    (cd "$dir" && exec setsid "$@" >"$T/logs/$name.out" 2>&1 </dev/null) &
    PIDS[$name]=$!
    ORDER+=("$name")
}

# wait_until SECONDS CMD...: poll CMD until it succeeds; fail at the deadline or
# as soon as a process this script started has exited.
DIED=
wait_until() {
    local deadline=$(( $(date +%s) + $1 ))
    shift
    until "$@" >/dev/null 2>&1; do
        for name in "${ORDER[@]}"; do
            if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
                DIED=$name
                return 1
            fi
        done
        (( $(date +%s) < deadline )) || return 1
        sleep 0.25
    done
}

N=0 PASSED=0 FAILED=0 SKIPPED=0
pass() { N=$((N + 1)); PASSED=$((PASSED + 1)); echo "[PASS] $N. $1"; [[ -z ${2:-} ]] || echo "$2" | sed 's/^/       /'; }
fail() { N=$((N + 1)); FAILED=$((FAILED + 1)); echo "[FAIL] $N. $1"; [[ -z ${2:-} ]] || echo "$2" | sed 's/^/       /'; }
skip() { N=$((N + 1)); SKIPPED=$((SKIPPED + 1)); echo "[SKIP] $N. $1"; }
# show TITLE FILE [GREP-ARGS...]: evidence under a FAIL, indented, capped
show() {
    local title=$1 file=$2
    shift 2
    echo "       --- $title ($file)"
    if [[ ! -s $file ]]; then
        echo "       (empty)"
    elif (( $# )); then
        grep "$@" "$file" | cut -c1-700 | tail -n 40 | sed 's/^/       | /' || echo "       (no matching line)"
    else
        tail -n 25 "$file" | cut -c1-700 | sed 's/^/       | /'
    fi
}
# count GREP-ARGS... FILE: matching lines, 0 when none or no file yet
count() { local n; n=$(grep -c "$@" 2>/dev/null) || true; echo "${n:-0}"; }
died_note() { [[ -z $DIED ]] || echo "       ($DIED exited: see $T/logs/$DIED.out)"; }
finish() {
    local secs=$(( $(date +%s) - START ))
    echo "== summary ($MODE, ${secs}s): $PASSED PASS, $FAILED FAIL, $SKIPPED SKIP"
    (( FAILED == 0 ))
}

# Ports, all on 127.0.0.1: entrance, redis, box app, nginx TLS (the box's proxy
# port), nginx data.
mapfile -t PORTS < <("$PY" "$HARNESS" free-ports 5)
E_PORT=${PORTS[0]} R_PORT=${PORTS[1]} BOX_PORT=${PORTS[2]} PROXY_PORT=${PORTS[3]} DATA_PORT=${PORTS[4]}
ENTRANCE_URL="http://127.0.0.1:$E_PORT/dandelion/ws/"   # the original's URL form
echo "== $MODE in $T (network: $ORIGINAL_RUN_INSIDE)"
echo "   entrance $E_PORT, redis $R_PORT, box app $BOX_PORT, box TLS proxy $PROXY_PORT, box data $DATA_PORT"

# --- The original's code, exported from the mirror. Only named paths: the
# mirror lacks the blob of a large .pptx, so archiving the whole tree fails.
export_original() {
    mkdir -p "$1"
    git --git-dir="$ORIGINAL_GIT" archive "$ORIGINAL_COMMIT" \
        dandelion run_box.py run_publisher.py config.yaml.example compose/box/nginx/nginx.conf \
        2>"$T/git-archive.err" | tar -x -C "$1" ||
        { cat "$T/git-archive.err" >&2; die "cannot export the original from $ORIGINAL_GIT"; }
}

# --- Redis: one server; the box uses DB 0, the publisher DB 1.
mkdir -p "$T/redis"
start redis "$T/redis" redis-server --bind 127.0.0.1 --port "$R_PORT" --save "" \
    --appendonly no --dir "$T/redis" --logfile "$T/redis/redis.log"
wait_until 10 redis-cli -p "$R_PORT" ping || die "redis did not start (see $T/redis/redis.log)"
BOX_DB=0 PUB_DB=1

# --- Step 1: the Dandelion entrance.
mkdir -p "$T/entrance"
E_CONF=$T/entrance/dandelion.toml
LEGACY=true
[[ $MODE == legacy-on ]] || LEGACY=false
cat >"$E_CONF" <<EOF
data_dir = "$T/entrance/data"
store = "embedded"
log_file = false
[entrance]
listen = "127.0.0.1:$E_PORT"
legacy_peers = $LEGACY
# The entrance calls nobody: the original's boxes are never checked anyway.
reachability_check = false
reachability_private = true
EOF
LEGACY_PUBLISHERS_NOTE=
if [[ $MODE == legacy-on ]]; then
    # Where unauthenticated original publishers may SEARCH from. A binary from
    # before this setting refuses the key; then it is left out and said so.
    sed -i '/^legacy_peers/a legacy_publishers = ["127.0.0.1"]' "$E_CONF"
    if ! "$DANDELION" check --role entrance -c "$E_CONF" >"$T/entrance/check.out" 2>&1; then
        # shellcheck disable=SC2016 # the backticks are literal, as the error prints them
        if grep -q 'unknown field `legacy_publishers`' "$T/entrance/check.out"; then
            sed -i '/^legacy_publishers/d' "$E_CONF"
            LEGACY_PUBLISHERS_NOTE="NOTE: this entrance binary does not know legacy_publishers (unknown field); ran without it"
        fi
    fi
fi
if ! "$DANDELION" check --role entrance -c "$E_CONF" >"$T/entrance/check.out" 2>&1; then
    cat "$T/entrance/check.out" >&2
    die "the entrance refuses its config $E_CONF"
fi
[[ -z $LEGACY_PUBLISHERS_NOTE ]] || echo "$LEGACY_PUBLISHERS_NOTE"
E_LOG=$T/logs/entrance.out
NO_COLOR=1 start entrance "$T/entrance" "$DANDELION" entrance -c "$E_CONF"
entrance_hi() { curl -sf "http://127.0.0.1:$E_PORT/dandelion/" | grep -q '^HI entrance-'; }
if wait_until "$STEP_TIMEOUT" entrance_hi; then
    pass "entrance answers HI on http://127.0.0.1:$E_PORT/dandelion/ (legacy_peers = $LEGACY)" \
        "$(grep -hE 'LEGACY PEERS|^legacy_publishers' "$E_CONF" "$E_LOG" | cut -c1-160 || true)"
else
    fail "entrance answers HI on http://127.0.0.1:$E_PORT/dandelion/"
    died_note; show "entrance log" "$E_LOG"
    finish; exit
fi
ADMIN_TOKEN=$(cat "$T/entrance/data/admin.token")

# --- The original box: its source, config (the keys of config.yaml.example), and
# the nginx in front of it.
BOX=$T/box
export_original "$BOX/src"
mkdir -p "$BOX/data"
cat >"$BOX/src/config.yaml" <<EOF
REDIS_HOST: "127.0.0.1"
REDIS_PORT: $R_PORT
DB: $BOX_DB
ENTRANCE_URLS:
  - "$ENTRANCE_URL"
BOX_SERVER_IP: "127.0.0.1"
BOX_CLIENT_IP:
BOX_PORT: $BOX_PORT
BOX_SERVER_PROXY_PORT: $PROXY_PORT
BASE_DIRECTORY: "$BOX/data"
BOX_PING_ENTRANCE_FREQ: 2
SERVER_REDIS_MINSIZE: 10
SERVER_REDIS_MAXSIZE: 20
CLIENT_REDIS_MINSIZE: 10
CLIENT_REDIS_MAXSIZE: 15
EOF

if [[ $MODE == legacy-on ]]; then
    # nginx as compose/box/nginx/nginx.conf: TLS on the proxy port with an
    # Upgrade-passing location /dandelion to the box's app port, and plain HTTP
    # on the data port with root = BASE_DIRECTORY, logging in the format the
    # box parses for its TRAFFIC_FLOW. Differences: a throwaway certificate,
    # 127.0.0.1 and temp paths instead of docker's, `listen ... ssl` for the
    # deprecated `ssl on;`. Like the original there is no
    # `proxy_http_version 1.1`: nginx forwards the upgrade as HTTP/1.0, and
    # aiohttp 2.2 accepts it.
    NG=$T/nginx
    mkdir -p "$NG/tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
        -keyout "$NG/server.key" -out "$NG/server.crt" >"$NG/openssl.out" 2>&1 ||
        { cat "$NG/openssl.out" >&2; die "openssl could not make a certificate"; }
    user_line=
    [[ $(id -u) == 0 ]] && user_line="user root;"   # as the original; workers read the temp dir
    mime=
    [[ -f /etc/nginx/mime.types ]] && mime="include /etc/nginx/mime.types;"
    cat >"$NG/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log info;
events { worker_connections 256; }
http {
    $mime
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    gzip on;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    access_log $NG/access.log;
    log_format compression '"\$request"-\$status-\$bytes_sent';
    upstream box_server { server 127.0.0.1:$BOX_PORT; }
    server {
        listen 127.0.0.1:$PROXY_PORT ssl;
        ssl_certificate $NG/server.crt;
        ssl_certificate_key $NG/server.key;
        ssl_session_timeout 5m;
        ssl_protocols TLSv1 TLSv1.1 TLSv1.2;
        ssl_ciphers 'EECDH+AESGCM:EDH+AESGCM:AES256+EECDH:AES256+EDH';
        ssl_prefer_server_ciphers on;
        add_header Strict-Transport-Security "max-age=31536000;" always;
        location /dandelion {
            proxy_pass http://box_server;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1d;
            proxy_redirect off;
            access_log off;
        }
    }
    server {
        listen 127.0.0.1:$DATA_PORT;
        location / {
            root $BOX/data;
            allow all;
            add_header Cache-Control no-cache;
            add_header 'Access-Control-Allow-Origin' '*';
            add_header 'Access-Control-Allow-Credentials' 'true';
            add_header 'Access-Control-Allow-Methods' 'GET, POST, OPTIONS';
            add_header 'Access-Control-Allow-Headers' 'DNT,X-CustomHeader,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type';
            access_log $BOX/nginx-access.log compression;
        }
    }
}
EOF
    nginx -t -p "$NG/" -c "$NG/nginx.conf" -e "$NG/error.log" >"$NG/test.out" 2>&1 ||
        { cat "$NG/test.out" >&2; die "nginx refuses $NG/nginx.conf"; }
    start nginx "$NG" nginx -p "$NG/" -c "$NG/nginx.conf" -e "$NG/error.log"
fi

# The box tails (and deletes!) its nginx access log: point it at ours (and,
# with no nginx in legacy-off mode, make it exist so the box does not complain).
[[ $MODE == legacy-on ]] || : >"$BOX/nginx-access.log"
ORIGINAL_NGINX_ACCESS_LOG=$BOX/nginx-access.log start box "$BOX" "$PY" "$HARNESS" run-box "$BOX/src"
BOX_LOG=$BOX/dandelion.log   # the original's own log file, written in its cwd
box_id_known() { grep -q '^box-[0-9a-f]\{32\}$' "$BOX/data/box-id.txt"; }
if ! wait_until "$STEP_TIMEOUT" box_id_known; then
    fail "the original box starts (writes BASE_DIRECTORY/box-id.txt)"
    died_note; show "box output" "$T/logs/box.out"
    finish; exit
fi
BOX_ID=$(cat "$BOX/data/box-id.txt")

# --- Step 2: the box's index, through nginx's TLS proxy (or directly, legacy-off).
if [[ $MODE == legacy-on ]]; then
    HI_URL="https://127.0.0.1:$PROXY_PORT/dandelion/$BOX_ID/"
else
    HI_URL="http://127.0.0.1:$BOX_PORT/dandelion/$BOX_ID/"
fi
box_hi() { [[ $(curl -skf "$HI_URL") == "HI $BOX_ID" ]]; }
if wait_until "$STEP_TIMEOUT" box_hi; then
    pass "original box $BOX_ID answers 'HI $BOX_ID' on $HI_URL"
else
    fail "original box answers 'HI $BOX_ID' on $HI_URL"
    died_note; show "box output" "$T/logs/box.out"
    [[ $MODE == legacy-off ]] || show "nginx error log" "$NG/error.log"
    finish; exit
fi

# The original's net guard: step 9 / the last step in both modes.
check_no_outside_traffic() {
    local hits
    hits=$(grep -h 'ORIGINAL-NET-GUARD' "$T"/logs/*.out "$BOX/dandelion.log" \
        "$T/publisher/dandelion.log" 2>/dev/null | sort -u || true)
    if [[ -z $hits ]]; then
        pass "the original code attempted no connection off this machine (get_ip patched; guard silent; network: $ORIGINAL_RUN_INSIDE)"
    else
        fail "the original code attempted connections off this machine (refused)" "$hits"
    fi
}

# ===========================================================================
if [[ $MODE == legacy-off ]]; then
    # With legacy_peers off the entrance refuses the box. What does the box get
    # to see? Wait for at least one attempt to have ended, then look for the
    # entrance's explanation in the box's log.
    # Each heartbeat (2 s) is one attempt; three that ended without the
    # explanation end the wait early.
    attempts() { count -E 'Unable to connect to|Fail in connect_entrance|No COMMAND key|RECEIVE MSG' "$BOX_LOG"; }
    explained() { grep -qi 'legacy' "$BOX_LOG"; }
    explained_or_tried() { explained || (( $(attempts) >= 3 )); }
    wait_until "$STEP_TIMEOUT" explained_or_tried || true
    if explained; then
        pass "the box's log carries the entrance's explanation (a text containing 'legacy')" \
            "$(grep -i -m 3 'legacy' "$BOX_LOG" | cut -c1-600)"
        if grep -q 'No COMMAND key in msg.' "$BOX_LOG"; then
            echo "       (and the original logged 'No COMMAND key in msg.', as expected for an ERROR without COMMAND)"
        fi
    else
        fail "the box's log carries the entrance's explanation (a text containing 'legacy'; $(attempts) attempts seen)"
        died_note
        show "box log: how its attempts at the entrance ended" "$BOX_LOG" \
            -B1 -E 'Unable to connect to|Fail in connect_entrance|No COMMAND key|RECEIVE MSG'
        show "entrance log" "$E_LOG" -iE 'refus|legacy|401|warn|error'
    fi
    check_no_outside_traffic
    finish; exit
fi

# --- Step 3: nginx's data port serves BASE_DIRECTORY, as the original's /tmp.
DATA_BASE="http://127.0.0.1:$DATA_PORT"
if [[ $(curl -sf "$DATA_BASE/box-id.txt" || true) == "$BOX_ID" ]]; then
    pass "the box's data port serves its BASE_DIRECTORY ($DATA_BASE/box-id.txt)"
else
    fail "the box's data port serves its BASE_DIRECTORY ($DATA_BASE/box-id.txt)"
    show "nginx error log" "$NG/error.log"
fi

# --- Step 4: the entrance lists the box, marked legacy.
listed_legacy() {
    curl -sf -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$E_PORT/api/boxes" >"$T/boxes.json" &&
        "$PY" - "$T/boxes.json" "$BOX_ID" <<'EOF'
import json, sys
boxes = [b for b in json.load(open(sys.argv[1])) if b.get("id") == sys.argv[2]]
sys.exit(0 if boxes and boxes[0].get("legacy") is True else 1)
EOF
}
if wait_until "$STEP_TIMEOUT" listed_legacy; then
    pass "the entrance lists the original box, marked legacy (/api/boxes)" \
        "$("$PY" -c 'import json,sys; b=[b for b in json.load(open(sys.argv[1])) if b["id"]==sys.argv[2]][0]; print("state=%s legacy=%s connect_ws=%s" % (b["state"], b["legacy"], b.get("connect_ws")))' "$T/boxes.json" "$BOX_ID")"
else
    fail "the entrance lists the original box, marked legacy (/api/boxes)"
    died_note
    show "/api/boxes" "$T/boxes.json"
    show "box log: its heartbeats" "$BOX_LOG" -A3 -E 'Unable to connect|Fail in connect_entrance|RECEIVE MSG|Error'
    show "entrance log" "$E_LOG"
fi

# --- The original publisher.
PUB=$T/publisher
export_original "$PUB/src"
mkdir -p "$PUB/base" "$PUB/files"
cat >"$PUB/src/config.yaml" <<EOF
REDIS_HOST: "127.0.0.1"
REDIS_PORT: $R_PORT
DB: $PUB_DB
ENTRANCE_URLS:
  - "$ENTRANCE_URL"
BASE_DIRECTORY: "$PUB/base"
PUBLISHER_IP: "127.0.0.1"
MIN_HTTP_PEERS: 20
PUBLISHER_REDIS_MINSIZE: 5
PUBLISHER_REDIS_MAXSIZE: 10
PUBLISHER_PING_ENTRANCE_FREQ: 2
EOF
start publisher "$PUB" "$PY" "$HARNESS" run-publisher "$PUB/src"
PUB_LOG=$PUB/dandelion.log
pub_id_known() { grep -q '^publisher-[0-9a-f]\{32\}$' "$PUB/base/publisher-id.txt"; }
wait_until "$STEP_TIMEOUT" pub_id_known || { died_note; show "publisher output" "$T/logs/publisher.out"; die "the original publisher did not start"; }
PUB_ID=$(cat "$PUB/base/publisher-id.txt")
echo "   original publisher $PUB_ID"

# --- Step 5: the publisher learned the box from the entrance's SEARCH answer.
# The publisher asks every 2 s and each answer that breaks it breaks it the same
# way, so three broken answers end the wait early.
learned() { [[ $(redis-cli -p "$R_PORT" -n "$PUB_DB" exists "$PUB_ID:SEARCH:$BOX_ID") == 1 ]]; }
broken_answers() { count 'Fail in connect_entrance' "$PUB_LOG"; }
learned_or_broken() { learned || (( $(broken_answers) >= 3 )); }
wait_until "$STEP_TIMEOUT" learned_or_broken || true
if learned; then
    pass "the original publisher learned the box from the entrance ($PUB_ID:SEARCH:$BOX_ID)" \
        "CONNECT_WS=$(redis-cli -p "$R_PORT" -n "$PUB_DB" hget "$PUB_ID:SEARCH:$BOX_ID" CONNECT_WS)"
else
    fail "the original publisher learned the box from the entrance (no $PUB_ID:SEARCH:$BOX_ID in its Redis)"
    died_note
    echo "       SEARCH answers received: $(count 'RECEIVE MSG' "$PUB_LOG")," \
        "'Fail in connect_entrance.': $(broken_answers)," \
        "'unhashable type': $(count 'unhashable type' "$PUB_LOG")"
    "$PY" "$HARNESS" search-answer "$PUB_LOG" | sed 's/^/       /'
    # The first answer, and the original's log up to the exception it raised.
    echo "       --- publisher log: the first SEARCH answer and what the original made of it ($PUB_LOG)"
    awk '/RECEIVE MSG/ { on = 1 } on { print } on && /^[A-Za-z]*Error: / { exit }' "$PUB_LOG" |
        head -n 40 | cut -c1-700 | sed 's/^/       | /'
    show "entrance log" "$E_LOG"
    for s in "the publisher opens its PUBLISH socket to the box" \
        "FileManager.push, then FileManager.ask reports MSG: Success with the box's ID" \
        "the box's data port serves the pushed file"; do
        skip "$s"
    done
    check_no_outside_traffic
    finish; exit
fi

# --- Step 6: the publisher dialled CONNECT_WS (through nginx TLS) and sent PUBLISH.
connected() { grep -q "Receive Connection from $PUB_ID" "$BOX_LOG" && grep -q "Connect to box $BOX_ID" "$PUB_LOG"; }
if wait_until "$STEP_TIMEOUT" connected; then
    pass "the publisher opened its PUBLISH socket to the box over https://127.0.0.1:$PROXY_PORT (box: 'Receive Connection from $PUB_ID')"
else
    fail "the publisher opens its PUBLISH socket to the box"
    died_note
    show "publisher log" "$PUB_LOG" -A3 -E 'connect_box|Unable to connect|Connect to box|Error'
    show "box log" "$BOX_LOG" -A3 -E 'PUBLISH|Receive Connection|Error'
    show "nginx error log" "$NG/error.log"
fi

# --- Step 7: push a file through the publisher's Redis, as the original's users
# (channel/) do; ask until the publisher has recorded where it went.
FILE=$PUB/files/segment-0001.ts
head -c 65536 /dev/urandom >"$FILE"
"$PY" "$HARNESS" push "$PUB/src" "$PUB_ID" "$R_PORT" "$PUB_DB" "$FILE" 60
ask_ok() {
    "$PY" "$HARNESS" ask "$PUB/src" "$PUB_ID" "$R_PORT" "$PUB_DB" "$FILE" >"$T/ask.json" &&
        "$PY" -c 'import json,sys; a=json.load(open(sys.argv[1])); sys.exit(0 if a.get("MSG")=="Success" and a.get("ID")==sys.argv[2] else 1)' \
            "$T/ask.json" "$BOX_ID"
}
if wait_until "$STEP_TIMEOUT" ask_ok; then
    pass "FileManager.push($FILE, 60); FileManager.ask says MSG: Success, ID: $BOX_ID" \
        "$(cut -c1-300 "$T/ask.json")"
else
    fail "FileManager.ask reports MSG: Success with the box's ID"
    died_note
    show "last ask answer" "$T/ask.json"
    show "publisher log" "$PUB_LOG" -A3 -E 'No available box|Send |No such file|Error'
fi

# --- Step 8: the box stored it, and its data port serves the very bytes.
FILE_URL="$DATA_BASE/$PUB_ID$FILE"
served() {
    curl -sf -o "$T/fetched" "$FILE_URL" && cmp -s "$FILE" "$T/fetched"
}
if wait_until "$STEP_TIMEOUT" served; then
    pass "the box's data port serves the same $(wc -c <"$FILE") bytes at $FILE_URL"
else
    fail "the box's data port serves the pushed file at $FILE_URL"
    died_note
    echo "       HTTP status: $(curl -s -o /dev/null -w '%{http_code}' "$FILE_URL" || true)"
    show "box log" "$BOX_LOG" -A3 -E 'Receive .* from|BINARY|Error|error'
    show "nginx error log" "$NG/error.log"
fi

check_no_outside_traffic
finish

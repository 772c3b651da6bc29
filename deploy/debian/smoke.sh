#!/usr/bin/env bash
# deploy/debian/smoke.sh DEB — installs the package on this machine, does what
# docs/operations.md tells an operator to (the `dandelion` user, a config in
# /etc/dandelion, the unit's command as that user), checks the entrance answers
# /healthz and /metrics, then purges the package. For a disposable machine:
# `.ci/run` runs it only with CI=true as root. Without systemd (a container) the
# unit's StateDirectory is made by hand, as systemd would.
set -euo pipefail
deb="${1:?usage: deploy/debian/smoke.sh DEB}"
[[ $(id -u) == 0 ]] || { echo "smoke.sh installs a package: run it as root on a disposable machine" >&2; exit 2; }
say() { echo "smoke: $*"; }
pid=""
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  dpkg -P dandelion >/dev/null 2>&1 || true
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
id dandelion >/dev/null || { echo "the package made no dandelion user" >&2; exit 1; }
say "installed; user $(id dandelion)"
[[ -f /usr/share/man/man1/dandelion-push.1.gz ]] || { echo "no man page installed" >&2; exit 1; }
grep -q '^ExecStart=/usr/bin/dandelion --config /etc/dandelion/entrance.toml entrance$' \
  /usr/lib/systemd/system/dandelion-entrance.service
install -d -o dandelion -g dandelion -m 0700 /var/lib/dandelion/entrance
runuser -u dandelion -- dandelion --config /etc/dandelion/entrance.toml --log-level warn \
  check --role entrance >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u dandelion -- dandelion --config /etc/dandelion/entrance.toml --log-level warn \
  entrance --listen "127.0.0.1:$port" &
pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "the packaged entrance exited" >&2; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" | grep -q '"status"'
curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^dandelion_build_info'
say "the packaged entrance ran as dandelion from /etc/dandelion/entrance.toml and answered /healthz and /metrics"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
dpkg -P dandelion >/dev/null
[[ ! -e /usr/bin/dandelion ]] || { echo "purge left /usr/bin/dandelion" >&2; exit 1; }
say "purged"

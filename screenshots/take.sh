#!/usr/bin/env bash
# Regenerates the console screenshots in this folder, from the real
# `dandelion-console` attached to a real `dandelion up` network:
#
#   bash screenshots/take.sh
#
# Builds the release binaries and the `screenshot` example, starts `dandelion up`
# (4 boxes) in a temporary directory, pushes a few files, keeps a few downloads
# going so the boxes show upload, then lets the example drive the console in a
# pseudo-terminal and write one PNG per view. The network is stopped (Ctrl-C)
# however the script ends. Needs the fixed ports of `dandelion up` free:
# 7070 (entrance), 7072 (publisher), 7081-7084 (boxes).
set -euo pipefail

BOXES=4
PORTS=(7070 7072)
for ((i = 0; i < BOXES; i++)); do PORTS+=($((7081 + i))); done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"

say() { printf 'take.sh: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

# The fonts the pictures are drawn with (Debian: fonts-dejavu-core).
fonts=/usr/share/fonts/truetype/dejavu
if [[ ! -f $fonts/DejaVuSansMono.ttf || ! -f $fonts/DejaVuSansMono-Bold.ttf ]]; then
	say "installing fonts-dejavu-core for DejaVu Sans Mono"
	if [[ $(id -u) -eq 0 ]]; then
		apt-get update -qq && apt-get install -y -qq fonts-dejavu-core
	else
		sudo apt-get update -qq && sudo apt-get install -y -qq fonts-dejavu-core
	fi
fi

# `dandelion up` listens on fixed ports: say which are taken instead of failing later.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
busy=()
for p in "${PORTS[@]}"; do
	if port_busy "$p"; then busy+=("$p"); fi
done
if ((${#busy[@]})); then
	die "ports ${busy[*]} on 127.0.0.1 are in use (another \`dandelion up\`?);" \
		"dandelion up needs ${PORTS[*]} free. Stop what listens there and run again."
fi

say "building (release)"
cargo build --release --bin dandelion --bin dandelion-console --example screenshot \
	-p dandelion-daemons -p dandelion-console
dandelion="$target/release/dandelion"
console="$target/release/dandelion-console"
shooter="$target/release/examples/screenshot"

work="$(mktemp -d "${TMPDIR:-/tmp}/dandelion-shots.XXXXXX")"
up_pid=""
traffic_pid=""
cleanup() {
	status=$?
	if [[ -n $traffic_pid ]]; then kill "$traffic_pid" 2>/dev/null || true; fi
	if [[ -n $up_pid ]] && kill -0 "$up_pid" 2>/dev/null; then
		kill -INT "$up_pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$up_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$up_pid" 2>/dev/null; then
			say "dandelion up did not stop on Ctrl-C; killing it"
			kill -KILL "$up_pid" 2>/dev/null || true
		fi
		wait "$up_pid" 2>/dev/null || true
	fi
	if ((status != 0)); then
		say "failed; the network's and the console's logs are kept in $work"
	else
		rm -rf "$work"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

data="$work/dandelion-data"
say "starting dandelion up with $BOXES boxes in $work"
(cd "$work" && exec "$dandelion" up --boxes "$BOXES" --data-dir "$data") >"$work/up.log" 2>&1 &
up_pid=$!
# Ready once it printed its banner (after the boxes registered and got their
# demonstration locations).
for _ in $(seq 1 600); do
	grep -q '^Dandelion is up' "$work/up.log" 2>/dev/null && break
	kill -0 "$up_pid" 2>/dev/null || {
		cat "$work/up.log" >&2
		die "dandelion up exited"
	}
	sleep 0.1
done
grep -q '^Dandelion is up' "$work/up.log" || {
	cat "$work/up.log" >&2
	die "dandelion up was not ready within 60 s"
}

# What gets pushed, and what the file picker shows.
media="$work/media"
mkdir -p "$media/live"
for i in 1 2 3 4; do
	head -c $((180000 + i * 23000)) /dev/urandom >"$media/live/seg-0000$i.ts"
done
head -c $((12 * 1024 * 1024)) /dev/urandom >"$media/trailer-1080p.mp4"
head -c 48000 /dev/urandom >"$media/poster.jpg"
head -c 2600000 /dev/urandom >"$media/highlights.ts"

push() { "$dandelion" push --data-dir "$data" "$@" >>"$work/push.log" 2>&1; }
say "pushing files"
push --replicas 2 --ttl 2h "$media/live"
push --replicas 1 --ttl 6h "$media/trailer-1080p.mp4"
push --replicas 3 --ttl 2h "$media/highlights.ts"
# A short TTL, so one file counts down while the others have hours.
push --replicas 1 --ttl 3m "$media/poster.jpg"
files=7

# Viewers: a bounded loop of downloads straight from the boxes that hold each
# file (found through the publisher's redirect), so every box has upload to
# show. Loopback only; stopped with the network.
box_ports=()
for ((i = 0; i < BOXES; i++)); do box_ports+=($((7081 + i))); done
paths=()
for name in trailer-1080p.mp4 live/seg-00001.ts live/seg-00002.ts live/seg-00004.ts highlights.ts; do
	# A file is redirected once it is placed: give the publisher a moment.
	for _ in $(seq 1 150); do
		url="$(curl -s --cacert "$data/ca.pem" -o /dev/null -w '%{redirect_url}' "https://127.0.0.1:7072/$name" || true)"
		[[ $url == https://127.0.0.1:* ]] && break
		sleep 0.2
	done
	if [[ $url == https://127.0.0.1:* ]]; then paths+=("${url#https://127.0.0.1:*/}"); fi
done
((${#paths[@]})) || die "the publisher redirected none of the pushed files to a box"
(
	for i in $(seq 1 400); do
		for path in "${paths[$((i % ${#paths[@]}))]}" "${paths[$((i * 3 % ${#paths[@]}))]}"; do
			for port in "${box_ports[@]}"; do
				curl -sf --cacert "$data/ca.pem" --max-time 5 "https://127.0.0.1:$port/$path" -o /dev/null || true
			done
		done
		sleep 0.3
	done
) &
traffic_pid=$!

say "driving the console"
"$shooter" \
	--console "$console" \
	--data-dir "$data" \
	--cwd "$media" \
	--out "$here" \
	--files "$files" \
	--log-file "$work/console.log"
# Which look of each view the pictures show: the SHA-256 of the view's
# snapshot (tui/src/ui/snapshots, without insta's header). The console's tests
# fail when a snapshot changes and this file does not, that is when a picture
# shows an older look than the code draws (tui/src/ui/tests.rs,
# every_screenshot_shows_the_look_its_view_has_now).
snaps="$root/tui/src/ui/snapshots"
{
	echo "# bash screenshots/take.sh writes this: <sha256 of the snapshot body>  <picture>  <snapshot>"
	while read -r png snap; do
		[[ -f $here/$png ]] || die "no $png was taken"
		printf '%s  %s  %s\n' "$(sed '1,/^---$/d' "$snaps/$snap" | sha256sum | cut -d' ' -f1)" "$png" "$snap"
	done <<'EOF_VIEWS'
entrance-boxes.png dandelion_console__ui__tests__entrance_boxes_120x40.snap
help.png dandelion_console__ui__tests__help_120x40.snap
evict-confirm.png dandelion_console__ui__tests__evict_confirm_120x40.snap
entrance-geo.png dandelion_console__ui__tests__entrance_geo_120x40.snap
entrance-events.png dandelion_console__ui__tests__entrance_events_120x40.snap
publisher-queue.png dandelion_console__ui__tests__publisher_files_120x40.snap
push-picker.png dandelion_console__ui__tests__picker_80x24.snap
publisher-ranking.png dandelion_console__ui__tests__publisher_ranking_120x40.snap
box-files.png dandelion_console__ui__tests__box_files_120x40.snap
EOF_VIEWS
} >"$here/views.sha256"
say "done: $(cd "$here" && ls ./*.png | tr '\n' ' ')"

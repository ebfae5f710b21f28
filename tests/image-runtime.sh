#!/usr/bin/env bash
# Runs the binary the way deploy/Dockerfile does, without an image (none can
# be pulled here): as uid/gid 10001, the config at etc/churnwatch (not
# writable for it), the working directory var/lib/churnwatch (the state
# volume, its only writable place), no capabilities, against a real broker
# (tansu). It must get ready, snapshot into the volume, stop cleanly on
# SIGTERM with exit 0, and write nothing anywhere else. Needs root (to
# switch users); says so and skips otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "image-runtime: skipped (needs root to run as uid 10001)"
  exit 0
fi
root=$(mktemp -d)
tansu_pid=""
cw_pid=""
cleanup() {
  [ -n "$cw_pid" ] && kill -9 "$cw_pid" 2>/dev/null || true
  [ -n "$tansu_pid" ] && kill "$tansu_pid" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # seconds, command...
  local limit=$1; shift
  for _ in $(seq 1 $((limit * 5))); do
    if "$@" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}

kafka=$(free_port)
tansu broker --listener-url "tcp://127.0.0.1:$kafka" --advertised-listener-url "tcp://127.0.0.1:$kafka" \
  --storage-engine memory://tansu/ >/dev/null 2>&1 &
tansu_pid=$!
wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$kafka"
for t in purchases calls tickets; do
  tansu topic create --broker "tcp://127.0.0.1:$kafka" --partitions 3 "$t" >/dev/null
done
for t in reps churn-alerts churn-dead-letters; do
  tansu topic create --broker "tcp://127.0.0.1:$kafka" --partitions 1 "$t" >/dev/null
done

# The image's layout: binary and config root-owned, the volume 10001's.
mkdir -p "$root/usr/local/bin" "$root/etc/churnwatch" "$root/var/lib/churnwatch"
install -m 0755 target/debug/churnwatch "$root/usr/local/bin/churnwatch"
ops=$(free_port)
api=$(free_port)
# The image ships config/churnwatch.toml; only the listeners differ here
# (free ports, so parallel runs do not collide).
sed -e "s|^bind = .*|bind = \"127.0.0.1:$api\"|" -e "s|^ops_bind = .*|ops_bind = \"127.0.0.1:$ops\"|" \
  config/churnwatch.toml > "$root/etc/churnwatch/churnwatch.toml"
grep -q "^ops_bind = \"127.0.0.1:$ops\"" "$root/etc/churnwatch/churnwatch.toml"
chmod 0755 "$root" "$root/usr" "$root/usr/local" "$root/usr/local/bin" "$root/etc" "$root/etc/churnwatch" "$root/var" "$root/var/lib"
chmod 0644 "$root/etc/churnwatch/churnwatch.toml"
chown 10001:10001 "$root/var/lib/churnwatch"
chmod 0700 "$root/var/lib/churnwatch"
touch "$root/.started"

echo "image-runtime: churnwatch run as uid 10001, only the state volume writable"
(cd "$root/var/lib/churnwatch" && exec setpriv --reuid=10001 --regid=10001 --clear-groups \
  --inh-caps=-all --bounding-set=-all --no-new-privs \
  "$root/usr/local/bin/churnwatch" run --config "$root/etc/churnwatch/churnwatch.toml" \
  --brokers "127.0.0.1:$kafka" 2>"$root/stderr.log") &
cw_pid=$!
ready() { curl -fsS "http://127.0.0.1:$ops/readyz" >/dev/null; }
if ! wait_for 90 ready; then
  echo "image-runtime: not ready in 90 s; its log:"; cat "$root/stderr.log"; exit 1
fi
snapshots() { compgen -G "$root/var/lib/churnwatch/churnwatch-state/partition-*.snap" >/dev/null; }
if ! wait_for 90 snapshots; then
  echo "image-runtime: no snapshot in the volume; its log:"; cat "$root/stderr.log"; exit 1
fi
kill -TERM "$cw_pid"
status=0
wait "$cw_pid" || status=$?
cw_pid=""
if [ "$status" != 0 ]; then
  echo "image-runtime: exit $status after SIGTERM; its log:"; cat "$root/stderr.log"; exit 1
fi
elsewhere=$(find "$root" -newer "$root/.started" -user 10001 ! -path "$root/var/lib/churnwatch*" -print)
if [ -n "$elsewhere" ]; then
  echo "image-runtime: wrote outside the state volume: $elsewhere"; exit 1
fi
if grep -q $'\x1b' "$root/stderr.log"; then
  echo "image-runtime: escape codes in the log"; exit 1
fi
echo "image-runtime: ok (ready, snapshots in the volume, clean stop, nothing written elsewhere)"

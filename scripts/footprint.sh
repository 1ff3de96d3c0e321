#!/usr/bin/env bash
# Footprint of the release vitalsd: stripped size, time from exec to serving, idle RSS, and
# the sampler's CPU per sample. Usage: scripts/footprint.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}

cargo build --release --quiet --bins --examples
bin=target/release/vitalsd
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/vitalsctl certs init --out "$work/pki" >/dev/null
cat > "$work/vitalsd.toml" <<TOML
[server]
listen = ["127.0.0.1:0"]
[tls]
cert = "$work/pki/server.crt"
key = "$work/pki/server.key"
client_ca = "$work/pki/ca.crt"
[log]
format = "json"
TOML

printf 'binary     %s bytes stripped (%s)\n' "$(stat -c %s "$bin")" "$(uname -m)"

# Exec to serving: the daemon logs "serving" once its listeners accept; the time is taken
# from a clock read just before exec and the log line's arrival.
starts=()
for _ in $(seq "$runs"); do
  t0=$(date +%s%N)
  "$bin" --config "$work/vitalsd.toml" 2> "$work/log" &
  pid=$!
  until grep -q '"serving"' "$work/log" 2>/dev/null; do sleep 0.001; done
  t1=$(date +%s%N)
  starts+=($(( (t1 - t0) / 1000 )))
  kill -TERM $pid; wait $pid || true
done
sorted=$(printf '%s\n' "${starts[@]}" | sort -n)
printf 'startup    median %s us, max %s us over %s runs (exec to serving)\n' \
  "$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")" "$(echo "$sorted" | tail -1)" "$runs"

# Idle RSS: start, let the sampler run a few cycles, read VmRSS.
"$bin" --config "$work/vitalsd.toml" 2> "$work/log" &
pid=$!
until grep -q '"serving"' "$work/log" 2>/dev/null; do sleep 0.01; done
sleep 3
printf 'idle RSS   %s kB after 3 s (VmRSS), %s threads\n' \
  "$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)" "$(awk '/^Threads/ {print $2}' /proc/$pid/status)"
kill -TERM $pid; wait $pid || true

target/release/examples/sampler_cost 200

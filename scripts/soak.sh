#!/usr/bin/env bash
# The long run: a release vitalsd under mixed load for SOAK_MINUTES (default 10) on loopback,
# with connection churn, streams and watches opened and dropped, and a hostile burst every
# minute; then a long fuzz run. Reports requests served, errors by status (only the codes the
# run asked for), RSS at start, middle and end, open descriptors at start and end, and CPU
# per request, as a markdown block (target/soak/report.md) for RELIABILITY.md.
#
# Usage: scripts/soak.sh            SOAK_MINUTES=10 SOAK_FUZZ_SECONDS=300 (0: no fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${SOAK_MINUTES:-10}
seconds=$((minutes * 60))
out=target/soak
mkdir -p "$out"
log() { printf '==> %s\n' "$*" >&2; }

cargo build --release --quiet --bins
ulimit -n 8192
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ctl=target/release/vitalsctl
$ctl certs init --out "$work/pki" >/dev/null
pki=$work/pki
addr=127.0.0.1:50181
. scripts/lib/daemon.sh
daemon_config "$work/vitalsd.toml" "${addr##*:}" 'max_connection_age = "2m"
max_connection_age_grace = "30s"'
# As the unit runs it (systemd/vitalsd.service sets the same tunable).
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=262144 \
  target/release/vitalsd --config "$work/vitalsd.toml" 2> "$out/vitalsd.log" & pids+=($!)
pid=$!
tls=(--tls-ca-cert "$pki/ca.crt" --tls-client-cert "$pki/client.crt" --tls-client-key "$pki/client.key")
wait_serving $addr

rss() { awk '/^VmRSS/ {print $2}' /proc/$pid/status; }
fds() { ls /proc/$pid/fd | wc -l; }
cpu_ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }

# Warm up with the same mix (allocator pools, TLS session caches), then take the baseline.
warm=()
$ctl bench --addr $addr "${tls[@]}" --connections 4 --streams 8 --duration 20s >/dev/null & warm+=($!)
$ctl bench --addr $addr "${tls[@]}" --connections 2 --streams 4 --size 4096 --duration 20s >/dev/null & warm+=($!)
$ctl bench --addr $addr "${tls[@]}" --connections 1 --streams 1 --status UNAVAILABLE --duration 20s >/dev/null & warm+=($!)
wait "${warm[@]}"
sleep 2
rss_start=$(rss) fds_start=$(fds) ticks_start=$(cpu_ticks)
log "baseline: RSS ${rss_start} kB, ${fds_start} fds; running ${minutes} min"

# Steady load: small and 4 KiB echo, and calls that ask for UNAVAILABLE (the only errors
# this run expects).
$ctl bench --addr $addr "${tls[@]}" --connections 4 --streams 8 --duration ${seconds}s --json > "$work/load-small.json" & pids+=($!)
$ctl bench --addr $addr "${tls[@]}" --connections 2 --streams 4 --size 4096 --duration ${seconds}s --json > "$work/load-4k.json" & pids+=($!)
$ctl bench --addr $addr "${tls[@]}" --connections 1 --streams 1 --status UNAVAILABLE --duration ${seconds}s --json > "$work/load-fail.json" & pids+=($!)

hostile() {
  local attack=$1; shift
  python3 tests/hostile/h2_abuse.py --addr $addr --ca "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key" \
    --attack "$attack" --seconds 5 "$@" >> "$work/hostile.jsonl" 2>/dev/null || echo "{\"attack\":\"$attack\",\"outcome\":\"script failed\"}" >> "$work/hostile.jsonl"
}

started=$(date +%s)
rss_mid=""
churn=0 watches=0 streams=0 bursts=0
while [ $(( $(date +%s) - started )) -lt "$seconds" ]; do
  t=$(( $(date +%s) - started ))
  # A new mTLS connection every second: a probe connects, checks, closes.
  $ctl probe -addr $addr -tls "${tls[@]}" >/dev/null 2>&1 && churn=$((churn + 1))
  # Watches and streams opened and dropped.
  if [ $((t % 5)) -eq 0 ]; then
    timeout 2 $ctl probe --watch -addr $addr -tls "${tls[@]}" >/dev/null 2>&1 || true; watches=$((watches + 1))
    timeout 2 $ctl --addr $addr "${tls[@]}" metrics --watch 1s >/dev/null 2>&1 || true; streams=$((streams + 1))
    timeout 1 $ctl --addr $addr "${tls[@]}" echo --count 50 --interval 10ms soak >/dev/null 2>&1 || true
  fi
  # A hostile burst every minute, rotating attacks.
  if [ $((t % 60)) -lt 1 ] && [ "$t" -gt 0 ]; then
    case $((bursts % 5)) in
      0) hostile rapid_reset --count 5000 ;;
      1) hostile ping_flood --count 5000 ;;
      2) hostile continuation_flood ;;
      3) hostile too_many_streams --count 500 ;;
      4) hostile random_bytes --count 50 ;;
    esac
    bursts=$((bursts + 1))
  fi
  if [ -z "$rss_mid" ] && [ "$t" -ge $((seconds / 2)) ]; then rss_mid=$(rss); fi
  sleep 1
done
wait "${pids[@]:1}" 2>/dev/null || true
sleep 3
rss_end=$(rss) fds_end=$(fds) ticks_end=$(cpu_ticks)
$ctl --addr $addr "${tls[@]}" metrics --json > "$work/metrics.json"

python3 - "$work" "$out/report.md" "$minutes" "$rss_start" "${rss_mid:-0}" "$rss_end" "$fds_start" "$fds_end" \
  "$ticks_start" "$ticks_end" "$churn" "$watches" "$streams" "$bursts" "$(getconf CLK_TCK)" <<'PY'
import json, sys, os
(work, report, minutes, rss0, rss1, rss2, fd0, fd1, t0, t1, churn, watches, streams, bursts, tck) = sys.argv[1:]
metrics = json.load(open(os.path.join(work, "metrics.json")))
calls = sum(m["calls"] for m in metrics["rpc"])
codes = {}
for m in metrics["rpc"]:
    for s in m["statuses"]:
        codes[s["code"]] = codes.get(s["code"], 0) + s["count"]
hostile = [json.loads(l) for l in open(os.path.join(work, "hostile.jsonl"))] if os.path.exists(os.path.join(work, "hostile.jsonl")) else []
cpu_s = (int(t1) - int(t0)) / int(tck)
growth = (int(rss2) - int(rss0)) / int(rss0) * 100
lines = [
    f"Soak of {minutes} min on {os.uname().machine}, {os.cpu_count()} cores (scripts/soak.sh):",
    "",
    "| what | value |", "|---|---|",
    f"| calls served (daemon's own statistics) | {calls:,} |",
    f"| by status | {', '.join(f'{k} {v:,}' for k, v in sorted(codes.items()))} |",
    f"| connection churn (probe connections) | {int(churn):,} |",
    f"| watches and metric streams opened and dropped | {int(watches)} + {int(streams)} |",
    f"| hostile bursts | {int(bursts)}: {', '.join(sorted({h['attack'] + ' → ' + str(h.get('outcome')) for h in hostile}))} |",
    f"| RSS start / middle / end | {int(rss0)/1024:.1f} / {int(rss1)/1024:.1f} / {int(rss2)/1024:.1f} MiB (growth {growth:+.1f}%) |",
    f"| open descriptors start / end | {fd0} / {fd1} |",
    f"| daemon CPU | {cpu_s:.1f} s, {cpu_s / max(calls, 1) * 1e6:.1f} µs per call |",
]
open(report, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
# Expected codes: OK, the UNAVAILABLE the run asks for, CANCELLED from dropped watches and
# series, and UNKNOWN from the hostile bursts' streams cut mid-message.
ok = growth <= 5 and int(fd0) == int(fd1) and set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED", "UNKNOWN"}
sys.exit(0 if ok else 1)
PY
status=$?

if [ "${SOAK_FUZZ_SECONDS:-300}" -gt 0 ] && [ -x scripts/fuzz.sh ]; then
  log "long fuzz run: ${SOAK_FUZZ_SECONDS:-300} s per target"
  scripts/fuzz.sh "${SOAK_FUZZ_SECONDS:-300}"
fi
exit $status

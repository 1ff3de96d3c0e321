#!/usr/bin/env bash
# Idle CPU of a release vitalsd (issue 17, BENCHMARKS.md) with tls.watch auto (inotify), poll and off, side by side,
# over $1 seconds (default 60): on-CPU time of all threads from /proc/PID/task/*/schedstat.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vitalsd --bin vitalsctl
secs=${1:-60}
work=$(mktemp -d)
target/release/vitalsctl certs init --out "$work/pki" >/dev/null
pki=$work/pki
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf $work' EXIT
port=50281
for mode in auto poll off; do
  cat > "$work/$mode.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
[tls]
cert = "$pki/server.crt"
key = "$pki/server.key"
client_ca = "$pki/ca.crt"
watch = "$mode"
[log]
level = "info"
TOML
  target/release/vitalsd --config "$work/$mode.toml" 2>"$work/$mode.log" & pids+=($!)
  port=$((port + 1))
done
sleep 3
cpu() { python3 -c '
import os,sys
pid=sys.argv[1]
print(sum(int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0]) for t in os.listdir(f"/proc/{pid}/task")))' "$1"; }
before=(); for p in "${pids[@]}"; do before+=("$(cpu $p)"); done
sleep "$secs"
i=0
for mode in auto poll off; do
  after=$(cpu ${pids[$i]})
  python3 -c 'import sys; ns=int(sys.argv[2])-int(sys.argv[1]); s=float(sys.argv[3]); print(f"tls.watch={sys.argv[4]}: {ns/1e6:.1f} ms on CPU in {s:.0f} s = {ns/(s*1e9)*100:.4f}%")' "${before[$i]}" "$after" "$secs" "$mode"
  grep -o '"following[^"]*"\|following the TLS files[^,]*' "$work/$mode.log" | head -1 || true
  i=$((i + 1))
done

#!/usr/bin/env bash
# The benchmarks, in one run: vitalsd against its peers (a bare tonic echo server built
# like vitalsd, the same built with cargo's default profile, and C++ gRPC; same proto, same
# mTLS), rotated within each repeat so machine drift cancels out, with server CPU per call
# and per full and resumed handshake; then health latency, the footprint and Prometheus. Results go to target/bench/ (raw JSON lines and
# report.md); BENCHMARKS.md quotes a run.
#
# Usage: scripts/bench.sh
#   BENCH_DURATION=5s BENCH_REPEATS=3   per measurement, and how many alternating rounds
#   BENCH_IDLE_SECONDS=60               the idle-CPU window
#   BENCH_SKIP_CROSS=1                  skip the aarch64/armv7 size builds
#   BENCH_WORKERS=                      vitalsd server.worker_threads (default: one per CPU it may use)
#   BENCH_VITALSD=path                  measure this vitalsd binary instead of the one built here
#                                       (a build with other settings, to compare)
#   BENCH_SERVER_CPUS=0 BENCH_CLIENT_CPUS=1-N  the cores servers and load run on (taskset lists);
#                                       BENCH_SERVER_CPUS=0-1 BENCH_CLIENT_CPUS=0-1 BENCH_WORKERS=2
#                                       measures the multi-thread scheduler on two cores
#   BENCH_SCENARIOS="5B-512 4KiB-512"   only these echo scenarios, then stop (for iterating on one
#                                       figure: no health, footprint or report)
#   BENCH_PEERS="bare tonic-default cpp" the peers vitalsd is measured against; vitalsd-tcacheN
#                                       is vitalsd with glibc.malloc.tcache_count=N (7: glibc's);
#                                       baseline is vitalsd built at BENCH_BASELINE (a git
#                                       revision, default HEAD~1), to show what a change moved;
#                                       with it the Prometheus part scrapes that build too
#   BENCH_HANDSHAKE_SECONDS=5            each openssl s_time run
#   BENCH_PARTS=prometheus              only the Prometheus part (scrape cost against Debian's
#                                       prometheus-node-exporter, push cost), then stop
#   BENCH_PARTS=instructions            only the instructions per call, server side, under
#                                       valgrind's callgrind (deterministic, unlike timings): each
#                                       server runs N1 and then N2 calls (2 connections x 8 in flight,
#                                       mutual TLS) in two runs, and (I(N2) - I(N1)) / (N2 - N1)
#                                       cancels start-up and handshakes; BENCH_CALLS="2000 6000";
#                                       BENCH_INSTRUCTION_SERVERS="vitalsd" counts only vitalsd
#   BENCH_PARTS=footprint               only idle RSS beside node_exporter and the sizes, with the
#                                       budgets (stripped <= 6 MiB on each ARM target; idle VmRSS
#                                       <= 8 MiB, RssAnon <= 1 MiB), then stop; exits 1 over one
#   BENCH_SCRAPES=60 BENCH_PUSH_SECONDS=30   scrapes per measurement; the push window
# Loopback only; every load is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-5s}
repeats=${BENCH_REPEATS:-3}
idle_seconds=${BENCH_IDLE_SECONDS:-60}
out=target/bench
mkdir -p "$out"
results=$out/results.jsonl
: > "$results"

log() { printf '==> %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing ($2)" >&2; exit 69; }; }
need python3 "apt-get install python3"
need taskset "apt-get install util-linux"

# Sizes first: the daemon alone, as shipped (examples pull tonic's server features in).
log "building"
cargo build --release --quiet --bin vitalsd
size_x86=$(stat -c %s target/release/vitalsd)
# The daemon as shipped, kept aside: building the examples next unifies tonic's server
# features into the crate and would replace target/release/vitalsd with another build.
mkdir -p "$out"; cp target/release/vitalsd "$out/vitalsd"; vitalsd=${BENCH_VITALSD:-$out/vitalsd}
cargo build --release --quiet --bins --examples
if [ "${BENCH_SKIP_CROSS:-}" != 1 ] && [ "${BENCH_PARTS:-}" != prometheus ] && [ "${BENCH_PARTS:-}" != instructions ]; then
  scripts/build-target.sh aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl >&2
fi
size_of() { [ -f "dist/$1/vitalsd" ] && stat -c %s "dist/$1/vitalsd" || echo null; }

ulimit -n 8192
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
target/release/vitalsctl certs init --out "$work/pki" >/dev/null
pki=$work/pki

# Pin servers and load generator to different cores when there are at least two.
cores=$(nproc)
if [ -n "${BENCH_SERVER_CPUS:-}" ]; then
  server_cpu=(taskset -c "$BENCH_SERVER_CPUS"); client_cpu=(taskset -c "${BENCH_CLIENT_CPUS:-$BENCH_SERVER_CPUS}")
elif [ "$cores" -ge 2 ]; then
  server_cpu=(taskset -c 0); client_cpu=(taskset -c 1-$((cores - 1)))
else
  server_cpu=(); client_cpu=()
fi

. scripts/lib/daemon.sh

# vitalsd as built at BENCH_BASELINE (default HEAD~1), in a worktree of its own under
# target/bench-peers/; prints the binary's path. Built once per revision.
baseline_vitalsd() {
  local rev tree out
  rev=$(git rev-parse --short "${BENCH_BASELINE:-HEAD~1}")
  tree=target/bench-peers/baseline-src-$rev out=target/bench-peers/baseline-$rev
  if [ ! -x "$out/release/vitalsd" ]; then
    log "building vitalsd at $rev (the baseline)"
    rm -rf "$tree"; git worktree prune
    git worktree add --detach "$tree" "$rev" >&2
    CARGO_TARGET_DIR=$out cargo build --release --quiet --locked --manifest-path "$tree/Cargo.toml" --bin vitalsd >&2
    git worktree remove --force "$tree" >&2
  fi
  echo "$out/release/vitalsd"
}
write_config() { daemon_config "$1" "$2" "${BENCH_WORKERS:+worker_threads = $BENCH_WORKERS}"; }

# The Prometheus part: CPU per scrape of vitalsd and of node_exporter side by side (each
# scraped over one kept-alive mutual-TLS connection, as Prometheus does; node_exporter with
# its default collectors and TLS from --web.config.file), body sizes, and CPU per push.
# CPU is each process's on-CPU time over all threads (schedstat) across the run, less what
# it spends idle over as long (measured first: vitalsd's sampler, ~0.3 ms a second).
# Scrapes are 0.3 s apart, past the 250 ms in which vitalsd serves a page again without
# rendering it, so each one renders; a back-to-back run shows what a reused page costs.
prometheus_part() {
  need prometheus-node-exporter "apt-get install prometheus-node-exporter"
  local py=scripts/lib/prometheus_bench.py n=${BENCH_SCRAPES:-60} window=${BENCH_PUSH_SECONDS:-30}
  write_config "$work/s.toml" 50175
  "$vitalsd" --config "$work/s.toml" 2>"$work/s.log" & pids+=($!); local s_pid=$!
  wait_serving 127.0.0.1:50175
  printf 'tls_server_config:\n  cert_file: %s\n  key_file: %s\n' "$pki/server.crt" "$pki/server.key" > "$work/ne-web.yml"
  prometheus-node-exporter --web.listen-address=127.0.0.1:50176 --web.config.file="$work/ne-web.yml" 2>"$work/ne.log" & pids+=($!); local ne_pid=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/50176) 2>/dev/null && break; sleep 0.05; done
  sleep 2
  # Idle CPU per second of each, over 10 s.
  local s_idle ne_idle c0 d0
  c0=$(python3 $py cpu $s_pid); d0=$(python3 $py cpu $ne_pid); sleep 10
  s_idle=$(( ($(python3 $py cpu $s_pid) - c0) / 10 )); ne_idle=$(( ($(python3 $py cpu $ne_pid) - d0) / 10 ))
  local b_pid="" b_idle=0 who_list="vitalsd node_exporter vitalsd-reused"
  if [[ " ${BENCH_PEERS:-} " == *" baseline "* ]]; then
    write_config "$work/sb.toml" 50191
    "$(baseline_vitalsd)" --config "$work/sb.toml" 2>"$work/sb.log" & pids+=($!); b_pid=$!
    wait_serving 127.0.0.1:50191
    sleep 2
    c0=$(python3 $py cpu $b_pid); sleep 10; b_idle=$(( ($(python3 $py cpu $b_pid) - c0) / 10 ))
    who_list="$who_list baseline"
  fi
  local round who pid port enc before after r idle gap count
  for round in $(seq "$repeats"); do
    for who in $who_list; do
      case $who in
        vitalsd) pid=$s_pid port=50175 idle=$s_idle gap=0.3 count=$n ;;
        node_exporter) pid=$ne_pid port=50176 idle=$ne_idle gap=0.3 count=$n ;;
        vitalsd-reused) pid=$s_pid port=50175 idle=$s_idle gap=0 count=200 ;;
        baseline) pid=$b_pid port=50191 idle=$b_idle gap=0.3 count=$n ;;
      esac
      for enc in identity gzip; do
        before=$(python3 $py cpu $pid)
        r=$(python3 $py scrape "https://127.0.0.1:$port/metrics" "$pki/ca.crt" "$pki/client.crt" "$pki/client.key" "$count" $enc $gap)
        after=$(python3 $py cpu $pid)
        python3 -c 'import json,sys; r=json.loads(sys.argv[1]); n=r["count"]; used=int(sys.argv[5]) - int(sys.argv[4]) - int(sys.argv[6]) * r["seconds"]; print(json.dumps({"label": "scrape-" + sys.argv[2], "server": sys.argv[3], "cpu_ms_per_scrape": used / 1e6 / n, "bytes": r["bytes"]}))' \
          "$r" $enc $who "$before" "$after" "$idle" >> "$results"
      done
    done
  done
  kill $s_pid $ne_pid $b_pid 2>/dev/null || true; wait $s_pid $ne_pid $b_pid 2>/dev/null || true
  # A push every second to a receiver that takes it (204), against the same daemon with no
  # push over the same window; the difference per push is the push's cost.
  : > "$work/sink.txt"
  python3 $py sink 50177 "$work/sink.txt" & pids+=($!); local sink_pid=$!
  for with in push none; do
    write_config "$work/p.toml" 50178
    if [ $with = push ]; then
      printf '[push]\nurl = "http://127.0.0.1:50177/api/v1/write"\ninterval = "1s"\n' >> "$work/p.toml"
    fi
    printf '[metrics]\nsample_interval = "1s"\n' >> "$work/p.toml"
    "$vitalsd" --config "$work/p.toml" 2>"$work/p.log" & local p_pid=$!
    wait_serving 127.0.0.1:50178
    sleep 2
    local pushes0 cpu0 cpu1 pushes1
    pushes0=$(wc -l < "$work/sink.txt"); cpu0=$(python3 $py cpu $p_pid)
    sleep "$window"
    pushes1=$(wc -l < "$work/sink.txt"); cpu1=$(python3 $py cpu $p_pid)
    kill $p_pid; wait $p_pid 2>/dev/null || true
    python3 -c 'import json,sys; print(json.dumps({"label": "push-window", "server": sys.argv[1], "cpu_ms": (int(sys.argv[3]) - int(sys.argv[2])) / 1e6, "pushes": int(sys.argv[5]) - int(sys.argv[4]), "bytes": int(open(sys.argv[6]).read().split()[-1] or 0)}))' \
      $with "$cpu0" "$cpu1" "$pushes0" "$pushes1" "$work/sink.txt" >> "$results"
  done
  kill $sink_pid 2>/dev/null || true; wait $sink_pid 2>/dev/null || true
  python3 - "$results" "$out/prometheus.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
lines = ["| scrape | server | CPU per scrape (median of rounds) | body |", "|---|---|---|---|"]
for enc in ("identity", "gzip"):
    for server in ("vitalsd", "node_exporter", "vitalsd-reused", "baseline"):
        rs = [r for r in rows if r["label"] == f"scrape-{enc}" and r["server"] == server]
        if not rs:
            continue
        cpu = statistics.median(r["cpu_ms_per_scrape"] for r in rs)
        spread = ", ".join(f"{r['cpu_ms_per_scrape']:.3f}" for r in rs)
        lines.append(f"| {enc} | {server} | {cpu:.3f} ms ({spread}) | {rs[-1]['bytes']:,} bytes |")
push = {r["server"]: r for r in rows if r["label"] == "push-window"}
p, q = push["push"], push["none"]
per = (p["cpu_ms"] - q["cpu_ms"]) / max(p["pushes"], 1)
lines += ["", f"| push | value |", "|---|---|",
          f"| CPU per push (one interval's samples, encoded, snappy, sent) | {per:.3f} ms ({p['pushes']} pushes: {p['cpu_ms']:.1f} ms with push, {q['cpu_ms']:.1f} ms without, same window) |",
          f"| push body (snappy) | {p['bytes']:,} bytes |"]
report = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(report)
print(report)
PY
}
# Idle memory beside node_exporter, in the same run: each started three times, alternating,
# and read 3 s after one request (vitalsd: a health probe; node_exporter: a scrape of its
# page), as VmRSS, RssAnon and RssFile; the median start by VmRSS. Then the budgets.
footprint_part() {
  need prometheus-node-exporter "apt-get install prometheus-node-exporter"
  write_config "$work/f.toml" 50173
  printf 'tls_server_config:\n  cert_file: %s\n  key_file: %s\n' "$pki/server.crt" "$pki/server.key" > "$work/ne-web.yml"
  local round pid v=() n=()
  for round in 1 2 3; do
    "$vitalsd" --config "$work/f.toml" 2>"$work/f.log" & pids+=($!); pid=$!
    wait_serving 127.0.0.1:50173
    sleep 3
    v+=("$(awk '/^(VmRSS|RssAnon|RssFile)/ {printf "%s ", $2}' "/proc/$pid/status")")
    kill $pid; wait $pid 2>/dev/null || true
    prometheus-node-exporter --web.listen-address=127.0.0.1:50176 --web.config.file="$work/ne-web.yml" 2>"$work/ne.log" & pids+=($!); pid=$!
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/50176) 2>/dev/null && break; sleep 0.05; done
    python3 scripts/lib/prometheus_bench.py scrape https://127.0.0.1:50176/metrics "$pki/ca.crt" "$pki/client.crt" "$pki/client.key" 1 identity 0 >/dev/null
    sleep 3
    n+=("$(awk '/^(VmRSS|RssAnon|RssFile)/ {printf "%s ", $2}' "/proc/$pid/status")")
    kill $pid; wait $pid 2>/dev/null || true
  done
  pids=()
  read -r idle_rss idle_anon idle_file <<< "$(printf '%s\n' "${v[@]}" | sort -n | sed -n 2p)"
  read -r ne_rss ne_anon ne_file <<< "$(printf '%s\n' "${n[@]}" | sort -n | sed -n 2p)"
  printf '{"label": "idle-rss", "server": "vitalsd", "rss_kib": %s, "anon_kib": %s, "file_kib": %s, "starts": "%s"}\n' \
    "$idle_rss" "$idle_anon" "$idle_file" "${v[*]}" >> "$results"
  printf '{"label": "idle-rss", "server": "node_exporter", "rss_kib": %s, "anon_kib": %s, "file_kib": %s, "starts": "%s"}\n' \
    "$ne_rss" "$ne_anon" "$ne_file" "${n[*]}" >> "$results"
  python3 - "$idle_rss" "$idle_anon" "$idle_file" "$ne_rss" "$ne_anon" "$ne_file" \
    "$(size_of aarch64-unknown-linux-gnu)" "$(size_of aarch64-unknown-linux-musl)" "$(size_of armv7-unknown-linux-gnueabihf)" "$size_x86" \
    "$out/footprint.md" <<'PY'
import sys
rss, anon, file, ne_rss, ne_anon, ne_file = (int(x) for x in sys.argv[1:7])
sizes = dict(zip(["aarch64-gnu", "aarch64-musl", "armv7"], sys.argv[7:10]))
x86, path = sys.argv[10], sys.argv[11]
mib = lambda kib: f"{kib / 1024:.2f} MiB"
over = []
lines = ["| idle, same run (median of 3 starts) | VmRSS | RssAnon | RssFile |", "|---|---|---|---|",
         f"| vitalsd | {mib(rss)} | {mib(anon)} | {mib(file)} |",
         f"| node_exporter (Debian) | {mib(ne_rss)} | {mib(ne_anon)} | {mib(ne_file)} |", "",
         "| budget | figure | verdict |", "|---|---|---|"]
def check(what, value, limit, shown):
    ok = value <= limit
    if not ok:
        over.append(what)
    lines.append(f"| {what} | {shown} | {'met' if ok else 'OVER'} |")
check("idle VmRSS <= 8 MiB", rss, 8 * 1024, mib(rss))
check("idle RssAnon <= 1 MiB", anon, 1024, mib(anon))
for target, size in sizes.items():
    if size != "null":
        check(f"stripped vitalsd {target} <= 6 MiB", int(size), 6 * 1024 * 1024, f"{int(size):,} bytes ({int(size) / 2**20:.2f} MiB)")
lines.append(f"| stripped vitalsd x86_64 (no budget) | {int(x86):,} bytes | |")
report = "\n".join(lines) + "\n"
open(path, "w").write(report)
print(report)
sys.exit(1 if over else 0)
PY
}
# Instructions per call, server side: each server under callgrind, N1 then N2 echo calls of
# each size; the difference of the two runs' totals over the difference of the calls. The
# servers: vitalsd (its sampler slowed to once an hour so no sample lands in one run and not
# the other), tonic at opt-level 3 (bench/tonic-default) and C++ gRPC (bench/cpp).
instructions_part() {
  need valgrind "apt-get install valgrind"
  local calls=(${BENCH_CALLS:-2000 6000}) size who port n totals file run
  if [[ " ${BENCH_INSTRUCTION_SERVERS:-tonic-default cpp} " == *" tonic-default "* ]]; then
    CARGO_TARGET_DIR=target/bench-peers/tonic-default cargo build --release --quiet --manifest-path bench/tonic-default/Cargo.toml
  fi
  if [[ " ${BENCH_INSTRUCTION_SERVERS:-tonic-default cpp} " == *" cpp "* ]]; then
    bench/cpp/build.sh >&2
  fi
  write_config "$work/c.toml" 50192
  printf '[metrics]\nsample_interval = "1h"\n' >> "$work/c.toml"
  for who in ${BENCH_INSTRUCTION_SERVERS:-vitalsd tonic-default cpp}; do
    for size in 5 4096; do
      totals=()
      for n in "${calls[@]}"; do
        port=50193
        file=$work/callgrind.$who.$size.$n
        case $who in
          vitalsd) run=("$vitalsd" --config "$work/c.toml"); port=50192 ;;
          tonic-default) run=(target/bench-peers/tonic-default/release/tonic_default_echo --listen 127.0.0.1:$port --pki "$pki") ;;
          cpp) run=(target/bench-peers/echo_server --listen 127.0.0.1:$port --pki "$pki") ;;
        esac
        # The unit's tunables, so vitalsd does not execute itself again (which under
        # valgrind would run it outside the tool).
        GLIBC_TUNABLES=glibc.malloc.mmap_threshold=262144:glibc.malloc.tcache_count=1 \
          valgrind --tool=callgrind --callgrind-out-file="$file" "${run[@]}" 2>"$work/cg.log" & local pid=$!
        for _ in $(seq 600); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
        target/release/vitalsctl bench --addr 127.0.0.1:$port --tls-ca-cert "$pki/ca.crt" \
          --tls-client-cert "$pki/client.crt" --tls-client-key "$pki/client.key" \
          --connections 2 --streams 8 --requests "$n" --size "$size" --timeout 60s --json > "$work/cg-load.json"
        kill -TERM $pid; wait $pid 2>/dev/null || true
        totals+=("$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file" | head -1)")
      done
      python3 -c 'import json,sys; a,b,n1,n2=map(int,sys.argv[3:7]); print(json.dumps({"label": "instructions", "server": sys.argv[1], "size": int(sys.argv[2]), "per_call": (b - a) / (n2 - n1), "totals": [a, b], "calls": [n1, n2]}))' \
        "$who" "$size" "${totals[0]}" "${totals[1]}" "${calls[0]}" "${calls[1]}" | tee -a "$results" >&2
    done
  done
  python3 - "$results" "$out/instructions.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"instructions"' in l]
lines = ["| server | instructions per call, 5 B | 4 KiB |", "|---|---|---|"]
for server in ("vitalsd", "tonic-default", "cpp"):
    per = {r["size"]: r["per_call"] for r in rows if r["server"] == server}
    lines.append(f"| {server} | {per.get(5, float('nan')):,.0f} | {per.get(4096, float('nan')):,.0f} |")
report = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(report)
print(report)
PY
}
if [ "${BENCH_PARTS:-}" = instructions ]; then
  log "instructions per call under callgrind (vitalsd, tonic at opt-level 3, C++ gRPC)"
  instructions_part
  exit 0
fi
if [ "${BENCH_PARTS:-}" = footprint ]; then
  log "footprint: idle memory beside node_exporter, sizes, budgets"
  footprint_part
  exit $?
fi
if [ "${BENCH_PARTS:-}" = prometheus ]; then
  log "Prometheus: scrape cost (vitalsd, node_exporter) and push cost"
  prometheus_part
  exit 0
fi

# The servers, each pinned to the server core: vitalsd; the bare tonic floor built with
# vitalsd's size-tuned profile (examples/bare_echo.rs); the same source built with cargo's
# default release profile (bench/tonic-default), the server a Rust user would write; and
# C++ gRPC's callback API (bench/cpp). BENCH_PEERS picks the peers (default: all three).
peers=${BENCH_PEERS:-bare tonic-default cpp}
declare -A addr_of pid_of
addr_of[vitalsd]=127.0.0.1:50171
write_config "$work/a.toml" 50171
"${server_cpu[@]}" "$vitalsd" --config "$work/a.toml" 2>"$work/a.log" & pids+=($!); pid_of[vitalsd]=$!
for peer in $peers; do
  case $peer in
    bare) addr_of[bare]=127.0.0.1:50172
      "${server_cpu[@]}" target/release/examples/bare_echo --listen ${addr_of[bare]} --pki "$pki" 2>"$work/bare.log" & ;;
    tonic-default) addr_of[tonic-default]=127.0.0.1:50179
      log "building the default-profile tonic peer (bench/tonic-default)"
      CARGO_TARGET_DIR=target/bench-peers/tonic-default cargo build --release --quiet --manifest-path bench/tonic-default/Cargo.toml
      "${server_cpu[@]}" target/bench-peers/tonic-default/release/tonic_default_echo --listen ${addr_of[tonic-default]} --pki "$pki" 2>"$work/tonic-default.log" & ;;
    cpp) addr_of[cpp]=127.0.0.1:50180
      log "building the C++ gRPC peer (bench/cpp)"
      bench/cpp/build.sh
      "${server_cpu[@]}" target/bench-peers/echo_server --listen ${addr_of[cpp]} --pki "$pki" 2>"$work/cpp.log" & ;;
    baseline) addr_of[baseline]=127.0.0.1:50190
      write_config "$work/b.toml" 50190
      "${server_cpu[@]}" "$(baseline_vitalsd)" --config "$work/b.toml" 2>"$work/b.log" & ;;
    vitalsd-tcache*) # vitalsd with glibc's per-thread cache at N (7 is glibc's default)
      n=${peer#vitalsd-tcache}; port=$((50181 + n)); addr_of[$peer]=127.0.0.1:$port
      write_config "$work/t$n.toml" $port
      GLIBC_TUNABLES=glibc.malloc.tcache_count=$n "${server_cpu[@]}" "$vitalsd" --config "$work/t$n.toml" 2>"$work/t$n.log" & ;;
    *) echo "bench: unknown peer $peer (bare, tonic-default, cpp, baseline, vitalsd-tcacheN)" >&2; exit 64 ;;
  esac
  pids+=($!); pid_of[$peer]=$!
done
wait_serving ${addr_of[vitalsd]}
for peer in $peers; do
  port=${addr_of[$peer]##*:}
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done
servers="vitalsd $peers"

# A process's CPU time so far, in clock ticks (threads that ended included).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

bench() { # LABEL SERVER ADDR CONNECTIONS STREAMS SIZE [extra vitalsctl args]
  local label=$1 server=$2 addr=$3 conns=$4 streams=$5 size=$6; shift 6
  local before after
  before=$(cpu_ticks "${pid_of[$server]}")
  "${client_cpu[@]}" target/release/vitalsctl bench --addr "$addr" \
    --tls-ca-cert "$pki/ca.crt" --tls-client-cert "$pki/client.crt" --tls-client-key "$pki/client.key" \
    --connections "$conns" --streams "$streams" --size "$size" --duration "$duration" --warmup 1s --json "$@" \
    > "$work/run.json"
  after=$(cpu_ticks "${pid_of[$server]}")
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r.update(label=sys.argv[2], server=sys.argv[3], server_cpu_ticks=int(sys.argv[5]) - int(sys.argv[4]), ticks_per_sec=int(sys.argv[6])); print(json.dumps(r))' \
    "$work/run.json" "$label" "$server" "$before" "$after" "$(getconf CLK_TCK)" >> "$results"
}

log "echo: $servers, alternating (rotated each round), $repeats rounds of $duration"
for round in $(seq "$repeats"); do
  # Each round starts with the next server, so every server is measured first, last and in
  # between as often as the rounds allow: machine drift cancels out of the ratios.
  read -ra order <<< "$servers"
  shift_by=$(( (round - 1) % ${#order[@]} ))
  order=("${order[@]:$shift_by}" "${order[@]:0:$shift_by}")
  for scenario in "5B-1:1:1:5" "5B-512:16:32:5" "4KiB-1:1:1:4096" "4KiB-512:16:32:4096"; do
    IFS=: read -r label conns streams size <<< "$scenario"
    [ -z "${BENCH_SCENARIOS:-}" ] || [[ " $BENCH_SCENARIOS " == *" $label "* ]] || continue
    for s in "${order[@]}"; do bench "$label" "$s" "${addr_of[$s]}" "$conns" "$streams" "$size"; done
  done
  log "round $round done"
done
for s in $servers; do
  printf '{"label": "peak-rss", "server": "%s", "kib": %s}\n' "$s" "$(awk '/^VmHWM/ {print $2}' "/proc/${pid_of[$s]}/status")" >> "$results"
done

# Full and resumed mutual-TLS handshakes (TLS 1.3, ECDSA P-256, a client certificate), one
# after another, each to the server's first HTTP/2 bytes and closed (examples/footprint.rs
# handshakes): the server's CPU per connection, the kernel's share of it included.
# "resumed" keeps the client's session cache, "full" has none; "resumed-tls12" resumes a
# TLS 1.2 session (no key exchange at all), for comparison.
handshake_seconds=${BENCH_HANDSHAKE_SECONDS:-5}
log "handshakes: full, resumed and resumed over TLS 1.2, ${handshake_seconds}s each"
for s in $servers; do
  for mode in full resumed resumed-tls12; do
    before=$(cpu_ticks "${pid_of[$s]}")
    r=$("${client_cpu[@]}" target/release/examples/footprint handshakes "${addr_of[$s]}" "$pki" \
      "$handshake_seconds" ${mode%-tls12} $([ "$mode" = resumed-tls12 ] && echo tls12) 2>/dev/null \
      || echo '{"handshakes": 0, "resumed": 0}')
    after=$(cpu_ticks "${pid_of[$s]}")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(label="handshake-" + sys.argv[2], server=sys.argv[3], server_cpu_ticks=int(sys.argv[5]) - int(sys.argv[4]), ticks_per_sec=int(sys.argv[6])); print(json.dumps(r))' \
      "$r" "$mode" "$s" "$before" "$after" "$(getconf CLK_TCK)" >> "$results"
  done
done

# The handshake alone: vitalsd's server config and a rustls client in memory, the server's
# side timed (no socket, no kernel, no HTTP/2), so full and resumed compare on TLS only.
for mode in full resumed full-tls12 resumed-tls12; do
  r=$("${server_cpu[@]}" target/release/examples/footprint tls-cost "$pki" 2000 ${mode%-tls12} $([[ $mode == *-tls12 ]] && echo tls12))
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(label="tls-cost-" + sys.argv[2], server="vitalsd"); print(json.dumps(r))' "$r" "$mode" >> "$results"
done

if [ -n "${BENCH_SCENARIOS:-}" ]; then
  python3 scripts/lib/echo_report.py "$results"
  exit 0
fi

log "health Check latency (vitalsd)"
for round in $(seq "$repeats"); do
  bench health-1 vitalsd "${addr_of[vitalsd]}" 1 1 0 --method /grpc.health.v1.Health/Check
  bench health-64 vitalsd "${addr_of[vitalsd]}" 1 64 0 --method /grpc.health.v1.Health/Check
done
kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=()

log "footprint"
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
footprint_ok=0
footprint_part || footprint_ok=$?
"$vitalsd" --config "$work/f.toml" 2>"$work/f.log" & pids+=($!); f_pid=$!
wait_serving 127.0.0.1:50173
sleep 3
target/release/examples/footprint hold 127.0.0.1:50173 "$pki" 1000 20 > "$work/hold.log" 2>&1 & hold_pid=$!
for _ in $(seq 600); do grep -q holding "$work/hold.log" 2>/dev/null && break; sleep 0.1; done
grep -q holding "$work/hold.log" || { cat "$work/hold.log" >&2; exit 1; }
sleep 5
conns_rss=$(rss_kb $f_pid)
conns_open=$(( $(ls /proc/$f_pid/fd | wc -l) ))
kill $hold_pid 2>/dev/null || true; wait $hold_pid 2>/dev/null || true
kill $f_pid; wait $f_pid 2>/dev/null || true; pids=()
startup=$(target/release/examples/footprint startup "$vitalsd" "$work/f.toml" 10)
sampler=$(target/release/examples/sampler_cost 200 | head -1)

log "idle CPU over ${idle_seconds}s (sampler every 5s, watchdog every 10s)"
write_config "$work/i.toml" 50174
python3 - "$work/notify" <<'PY' & pids+=($!)
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
while True: s.recv(4096)
PY
sleep 0.3
NOTIFY_SOCKET=$work/notify WATCHDOG_USEC=20000000 "$vitalsd" --config "$work/i.toml" 2>"$work/i.log" & pids+=($!); i_pid=$!
wait_serving 127.0.0.1:50174
sleep 2
task_stats() { # prints: total_ns switches per-thread
  python3 - "$1" <<'PY'
import os, sys, json
pid = sys.argv[1]; out = {}
for t in os.listdir(f"/proc/{pid}/task"):
    comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
    ns = int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
    sw = sum(int(l.split()[1]) for l in open(f"/proc/{pid}/task/{t}/status") if l.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))
    key = f"{comm}/{t}"; out[key] = [ns, sw]
print(json.dumps(out))
PY
}
before=$(task_stats $i_pid)
sleep "$idle_seconds"
after=$(task_stats $i_pid)
idle=$(python3 - "$before" "$after" "$idle_seconds" <<'PY'
import json, sys
b, a, secs = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
ns = sum(a[k][0] - b.get(k, [0, 0])[0] for k in a)
threads = {k.split('/')[0]: a[k][1] - b.get(k, [0, 0])[1] for k in a if a[k][1] - b.get(k, [0, 0])[1] > 0}
print(json.dumps({"cpu_percent": ns / (secs * 1e9) * 100, "cpu_ms": ns / 1e6, "switches_by_thread": threads}))
PY
)
kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=()

log "Prometheus: scrape cost (vitalsd, node_exporter) and push cost"
prometheus_part

python3 - "$results" "$out/report.md" <<PY
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(label, server, key):
    vals = [r for r in rows if r["label"] == label and r["server"] == server]
    if not vals: return None
    pick = {"rps": lambda r: r["requests_per_sec"], "cpu": lambda r: (r.get("cpu") or {}).get("percent_of_one_core", float("nan")),
            "errors": lambda r: sum(r["errors"].values())}
    f = pick.get(key) or (lambda r: r["latency_us"][key])
    return statistics.median(f(r) for r in vals)
import subprocess
lines = subprocess.run(["python3", "scripts/lib/echo_report.py", sys.argv[1]], capture_output=True, text=True, check=True).stdout.splitlines()
lines += ["", "| health | server | requests/s | p50 ms | p99 ms | p99.9 ms | errors | vitalsctl CPU (% of a core) |", "|---|---|---|---|---|---|---|---|"]
for label in ["health-1", "health-64"]:
    lines.append(f"| {label} | vitalsd | {med(label, 'vitalsd', 'rps'):,.0f} | {med(label, 'vitalsd', 'p50')/1000:.3f} | {med(label, 'vitalsd', 'p99')/1000:.3f} | {med(label, 'vitalsd', 'p999')/1000:.3f} | {med(label, 'vitalsd', 'errors'):.0f} | {med(label, 'vitalsd', 'cpu'):.0f} |")
idle = json.loads('''$idle''')
foot = [
  "",
  "| footprint | value |", "|---|---|",
  f"| idle RSS after startup (median of 3 starts) | {int('$idle_rss')/1024:.2f} MiB ({int('$idle_anon')/1024:.2f} anonymous, {int('$idle_file')/1024:.2f} file-backed); node_exporter in the same run {int('$ne_rss')/1024:.2f} MiB ({int('$ne_anon')/1024:.2f} anonymous) |",
  f"| RSS with 1,000 idle mTLS connections | {int('$conns_rss')/1024:.1f} MiB ({int('$conns_open')} open descriptors) |",
  "| startup | $startup |",
  "| stripped vitalsd, x86_64 | $size_x86 bytes |",
  f"| stripped vitalsd, aarch64 gnu / armv7 / aarch64 musl | $(size_of aarch64-unknown-linux-gnu) / $(size_of armv7-unknown-linux-gnueabihf) / $(size_of aarch64-unknown-linux-musl) bytes |",
  "| metrics sample | $sampler |",
  f"| idle CPU over $idle_seconds s | {idle['cpu_percent']:.4f}% ({idle['cpu_ms']:.1f} ms); context switches by thread: {idle['switches_by_thread']} |",
]
report = "\n".join(lines + foot) + "\n\n" + open("$out/footprint.md").read() + "\n" + open("$out/prometheus.md").read()
open(sys.argv[2], "w").write(report)
print(report)
PY
log "raw results: $results; report: $out/report.md"
[ "$footprint_ok" = 0 ] || { echo "bench: a footprint budget is exceeded (see $out/footprint.md)" >&2; exit 1; }

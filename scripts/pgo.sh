#!/usr/bin/env bash
# Profile-guided optimisation of the release vitalsd, as one command:
#   scripts/pgo.sh [TARGET]        (default: the host; e.g. aarch64-unknown-linux-gnu)
# 1. builds vitalsd instrumented (-Cprofile-generate), 2. runs it under the echo, health,
# metrics and handshake load of a fleet (vitalsctl bench on loopback; an ARM build runs
# under its qemu runner), 3. merges the profile with llvm-profdata (rustup's llvm-tools,
# added when missing), 4. builds the release vitalsd with -Cprofile-use. The result goes
# to target/pgo/<target>/vitalsd (stripped, as the release profile strips).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
target=${1:-$host}
out=target/pgo/$target
prof=$out/profiles
rm -rf "$prof"; mkdir -p "$prof"

rustup component add llvm-tools >/dev/null 2>&1 || true
profdata=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata 2>/dev/null | head -1)
[ -x "$profdata" ] || { echo "pgo: llvm-profdata not found (rustup component add llvm-tools)" >&2; exit 69; }

log() { printf '==> %s\n' "$*" >&2; }
log "instrumented build for $target"
CARGO_TARGET_DIR=$out/gen RUSTFLAGS="-Cprofile-generate=$PWD/$prof" \
  cargo build --release --locked --quiet --target "$target" --bin vitalsd
cargo build --release --locked --quiet --bin vitalsctl
ctl=target/release/vitalsctl
runner=()
if [ "$target" != "$host" ]; then
  case $target in
    aarch64-unknown-linux-gnu) runner=(qemu-aarch64-static -L /usr/aarch64-linux-gnu) ;;
    armv7-unknown-linux-gnueabihf) runner=(qemu-arm-static -L /usr/arm-linux-gnueabihf) ;;
    aarch64-unknown-linux-musl) runner=(qemu-aarch64-static) ;;
  esac
fi

log "training: echo, health, metrics and handshakes"
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
pki=$work/pki
$ctl certs init --out "$pki" >/dev/null
. scripts/lib/daemon.sh
daemon_config "$work/t.toml" 50195 'shutdown_delay = "0s"'
printf '[health]\nplaintext_listen = ["127.0.0.1:50196"]\n' >> "$work/t.toml"
"${runner[@]}" "$out/gen/$target/release/vitalsd" --config "$work/t.toml" 2>"$work/t.log" & daemon=$!
wait_serving 127.0.0.1:50195
tls=(--addr 127.0.0.1:50195 --tls-ca-cert "$work/pki/ca.crt" --tls-client-cert "$work/pki/client.crt" --tls-client-key "$work/pki/client.key")
seconds=${PGO_SECONDS:-3}
for load in "1 1 5" "16 32 5" "1 1 4096" "16 32 4096" "4 8 65536"; do
  read -r c s size <<< "$load"
  $ctl bench "${tls[@]}" --connections "$c" --streams "$s" --size "$size" --duration "${seconds}s" --warmup 0s >/dev/null
done
$ctl bench "${tls[@]}" --connections 2 --streams 16 --size 0 --duration "${seconds}s" --method /grpc.health.v1.Health/Check >/dev/null
for _ in $(seq 50); do
  $ctl probe -tls "${tls[@]}" >/dev/null
  $ctl probe -addr 127.0.0.1:50196 >/dev/null
  $ctl "${tls[@]}" metrics --json >/dev/null
  curl -s --cacert "$work/pki/ca.crt" --cert "$work/pki/client.crt" --key "$work/pki/client.key" \
    https://127.0.0.1:50195/metrics >/dev/null || true
done
kill -TERM $daemon; wait $daemon || true
ls "$prof"/*.profraw >/dev/null 2>&1 || { echo "pgo: the instrumented daemon wrote no profile" >&2; exit 1; }

log "merging the profile"
"$profdata" merge -o "$out/vitalsd.profdata" "$prof"/*.profraw
log "optimised build"
CARGO_TARGET_DIR=$out/use RUSTFLAGS="-Cprofile-use=$PWD/$out/vitalsd.profdata" \
  cargo build --release --locked --quiet --target "$target" --bin vitalsd
cp "$out/use/$target/release/vitalsd" "$out/vitalsd"
echo "$out/vitalsd: $(stat -c %s "$out/vitalsd") bytes" >&2

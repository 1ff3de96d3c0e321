#!/usr/bin/env bash
# Release vitalsd and vitalsctl for ARM Linux (or any target) into dist/TARGET/, without
# Docker: .cargo/config.toml names the Debian cross linkers and C compiler. Several targets
# build in one cargo run, so one target's LTO overlaps another's compile.
#
# Usage: scripts/build-target.sh TARGET [TARGET...]
#   aarch64-unknown-linux-gnu       apt-get install gcc-aarch64-linux-gnu
#   armv7-unknown-linux-gnueabihf   apt-get install gcc-arm-linux-gnueabihf
#   aarch64-unknown-linux-musl      apt-get install gcc-aarch64-linux-gnu (static binary)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then
  sed -n '2,9s/^# \{0,1\}//p' "$0" >&2
  exit 64
fi

# The C cross compiler (ring and zstd-sys compile C; the gcc driver also links).
compiler() {
  case $1 in
    aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) echo aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf-gcc ;;
    *) echo cc ;;
  esac
}

args=()
for target in "$@"; do
  cc=$(compiler "$target")
  if ! command -v "$cc" >/dev/null; then
    echo "build-target: $target needs $cc, which is not installed (see the usage above)" >&2
    exit 69
  fi
  # rustup installs the standard library for the pinned toolchain (rust-toolchain.toml).
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
  fi
  args+=(--target "$target")
done

cargo build --release --locked "${args[@]}" --bin vitalsd --bin vitalsctl

for target in "$@"; do
  out=${CARGO_TARGET_DIR:-target}/$target/release
  mkdir -p "dist/$target"
  cp "$out/vitalsd" "$out/vitalsctl" "dist/$target/"
  size=$(stat -c %s "dist/$target/vitalsd")
  # The newest glibc symbol version the binary references is the oldest glibc it runs on.
  glibc=$(readelf -V "dist/$target/vitalsd" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 || true)
  if [ -n "$glibc" ]; then needs="needs glibc >= ${glibc#GLIBC_}"; else needs="static, no glibc"; fi
  printf 'dist/%s/vitalsd: %s bytes (%s KiB stripped), %s\n' "$target" "$size" "$((size / 1024))" "$needs"
done

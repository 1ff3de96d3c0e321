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

# The glibc targets link with the toolchain's own lld (rust-lld, shipped in rustc's
# component) and pack their relative relocations as DT_RELR: the binary is
# position-independent, so every pointer in its read-only data needs a relocation, and as
# RELA entries (24 bytes each) they were 166 KiB of the aarch64 file; as RELR they are 2 KiB.
# Debian's ld 2.40 ignores -z pack-relative-relocs on ARM. The cost: glibc 2.36 or newer
# (the binary asks for GLIBC_ABI_DT_RELR, so an older loader refuses it by name instead of
# running it unrelocated); the static musl build runs on anything else (docs/arm.md).
gcc_ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
if [ ! -x "$gcc_ld/ld.lld" ]; then
  echo "build-target: rustc's lld is missing ($gcc_ld/ld.lld); rustup's default profile ships it" >&2
  exit 69
fi
lld="-C link-arg=-fuse-ld=lld -C link-arg=-B$gcc_ld"
relr="$lld -C link-arg=-Wl,-z,pack-relative-relocs"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$relr"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="$relr"
# The static musl build is not position-independent (no relocations to pack), but lld too:
# ld pads its file so that the end of RELRO falls on a 64 KiB boundary (45 KB of zeros in
# it); lld leaves that padding out of the file.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="$lld"

cargo build --release --locked "${args[@]}" --bin vitalsd --bin vitalsctl

# The budget for the stripped daemon on every device target (DESIGN.md): less than half of
# node_exporter's binary alone, for the jobs of node_exporter, a prober and Vault Agent.
budget=$((6 << 20))
over=0
for target in "$@"; do
  out=${CARGO_TARGET_DIR:-target}/$target/release
  mkdir -p "dist/$target"
  cp "$out/vitalsd" "$out/vitalsctl" "dist/$target/"
  size=$(stat -c %s "dist/$target/vitalsd")
  # The newest glibc symbol version the binary references is the oldest glibc it runs on.
  glibc=$(readelf -V "dist/$target/vitalsd" | grep -o 'GLIBC_[0-9.]*[0-9]' | sort -uV | tail -1 || true)
  if readelf -V "dist/$target/vitalsd" | grep -q GLIBC_ABI_DT_RELR; then glibc=GLIBC_2.36; fi
  if [ -n "$glibc" ]; then needs="needs glibc >= ${glibc#GLIBC_}"; else needs="static, no glibc"; fi
  printf 'dist/%s/vitalsd: %s bytes (%s KiB stripped), %s\n' "$target" "$size" "$((size / 1024))" "$needs"
  if [ "$size" -gt "$budget" ]; then
    echo "build-target: dist/$target/vitalsd is over its budget of $budget bytes (6 MiB)" >&2
    over=1
  fi
done
exit $over

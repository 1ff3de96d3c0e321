#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotently), then runs formatting,
# lints and every test. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# The toolchain is pinned in rust-toolchain.toml; rustup installs it on first use.
log "toolchain"
rustup show active-toolchain >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo --version

log "formatting"
cargo fmt --all -- --check

log "clippy"
cargo clippy --all-targets --locked -- -D warnings

log "unit and integration tests"
# Integration tests start real daemons and mostly wait on the network and timers, so they
# run wider than the core count.
cargo test --locked -- --test-threads 8

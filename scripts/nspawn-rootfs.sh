#!/usr/bin/env bash
# A minimal Debian bookworm root filesystem with systemd as init, for the real-systemd tests
# (tests/it/nspawn.rs boot it with systemd-nspawn). Idempotent: does nothing once
# DIR/.complete exists; an interrupted build leaves no DIR, so the next run starts over.
#
# Usage: scripts/nspawn-rootfs.sh [DIR]
#   DIR defaults to $VITALS_NSPAWN_ROOTFS, else target/nspawn-rootfs in the repository
#   (git-ignored, so a machine builds it once and keeps it across runs).
#
# Needs root and deb.debian.org; installs mmdebstrap with apt when it is missing.
# What goes in: the Essential set, systemd (+ systemd-sysv for /sbin/init), dbus (logind
# needs it, or the container boots "degraded"), and procps for /bin/kill, which the unit's
# ExecReload= runs. No apt, no docs, man pages or locales: about 85 MB.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-${VITALS_NSPAWN_ROOTFS:-target/nspawn-rootfs}}
if [ -e "$dir/.complete" ]; then
    echo "nspawn rootfs: $dir is ready"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "nspawn rootfs: building $dir needs root" >&2
    exit 1
fi
if ! command -v mmdebstrap >/dev/null; then
    apt-get install -y --no-install-recommends mmdebstrap ||
        { apt-get update && apt-get install -y --no-install-recommends mmdebstrap; }
fi

# Build beside DIR and rename at the end: DIR exists only when complete.
work="$dir.partial"
rm -rf "$work"
mkdir -p "$(dirname "$dir")"
# force-unsafe-io: dpkg skips its fsync per file (half the build time); the rename below
# is the only commit point that matters for a scratch tree.
mmdebstrap \
    --variant=essential \
    --include=systemd,systemd-sysv,dbus,procps \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$work" http://deb.debian.org/debian
touch "$work/.complete"
rm -rf "$dir"
mv "$work" "$dir"
echo "nspawn rootfs: built $dir ($(du -sh "$dir" | cut -f1))"

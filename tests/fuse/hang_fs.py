#!/usr/bin/env python3
"""A FUSE filesystem whose statfs hangs, as a dead NFS or CIFS server's does.

Usage: hang_fs.py MOUNTPOINT RELEASE_FILE

It mounts an empty directory at MOUNTPOINT (in the foreground) and prints `mounted` once
the kernel sees it. statfs(2) on it blocks until RELEASE_FILE exists (libfuse's loop keeps
Python's signal handlers from running, so a file it polls is the switch); from then on it
answers at once, as a roomy 1 GiB filesystem. SIGTERM unmounts and exits. The vitalsd
integration tests run it in a private mount namespace (tests/it/health.rs) to show that a
hung mount is reported stuck while everything else keeps being served.
"""
import errno
import os
import stat
import sys
import threading
import time

import mfusepy as fuse

released = threading.Event()


class HangFs(fuse.Operations):
    use_ns = True

    def getattr(self, path, fh=None):
        if path != "/":
            raise fuse.FuseOSError(errno.ENOENT)
        now = time.time_ns()
        return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2,
                "st_atime": now, "st_mtime": now, "st_ctime": now}

    def readdir(self, path, fh):
        return [".", ".."]

    def statfs(self, path):
        released.wait()
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 262144,
                "f_bfree": 200000, "f_bavail": 200000, "f_files": 1000,
                "f_ffree": 900, "f_namemax": 255}


def main():
    mountpoint, release = sys.argv[1], sys.argv[2]

    def watch_release():
        while not os.path.exists(release):
            time.sleep(0.02)
        released.set()

    threading.Thread(target=watch_release, daemon=True).start()

    def announce():
        # The mount appears in mountinfo once the kernel has it.
        for _ in range(500):
            with open("/proc/self/mountinfo") as f:
                if any(line.split()[4] == mountpoint for line in f):
                    print("mounted", flush=True)
                    return
            time.sleep(0.01)
        print("not mounted", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        fuse.FUSE(HangFs(), mountpoint, foreground=True, nothreads=False, fsname="hangfs")
    except RuntimeError:
        pass  # libfuse's loop ends with an error code when SIGTERM unmounts it


if __name__ == "__main__":
    main()

//! The kernel's notices of changes in directories (inotify(7)), through libc, read on the
//! runtime with tokio's `AsyncFd`: while nothing changes there is no thread, no timer and
//! no wakeup, only a descriptor the reactor waits on.
//!
//! Directories are watched, not files: tools replace a certificate by writing a temporary
//! file and renaming it over the old one (a watch on the old file's inode would see
//! nothing), and Kubernetes' atomic writer swaps a `..data` symlink beside the files.

// Audited unsafe: inotify_init1 and inotify_add_watch are plain system calls on integers
// and a NUL-terminated path that outlives the call; the new descriptor is owned at once, by
// a `File` that the `AsyncFd` registered with the reactor keeps open until it is dropped.
#![allow(unsafe_code)]

use std::{
    ffi::{CString, OsStr},
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use tokio::io::{Interest, unix::AsyncFd};

/// Everything that can mean a file in the directory was written, replaced, removed or had
/// its mode changed, and the directory itself going away.
const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// The fixed part of `struct inotify_event`: wd, mask, cookie, len.
const HEADER: usize = 16;

/// An inotify instance.
pub struct Inotify {
    fd: AsyncFd<File>,
}

/// One notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The watch (a directory) it is about; -1 when the kernel's queue overflowed and
    /// notices were lost.
    pub wd: i32,
    pub mask: u32,
    /// The name in the directory, empty for the directory itself.
    pub name: Vec<u8>,
}

impl Event {
    /// The name in the directory.
    pub fn name(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }

    /// Notices were lost: anything may have changed.
    pub fn overflowed(&self) -> bool {
        self.mask & libc::IN_Q_OVERFLOW != 0
    }

    /// The watched directory was removed or moved, or its watch is gone.
    pub fn directory_gone(&self) -> bool {
        self.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0
    }
}

impl Inotify {
    /// A new instance. Fails when the kernel has none (ENOSYS) or the user's instance limit
    /// is reached (EMFILE, `fs.inotify.max_user_instances`).
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: a system call on integer flags.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: the `File` owns the descriptor for as long as the `AsyncFd` holds it, and
        // nothing replaces or closes it meanwhile.
        let fd = unsafe { AsyncFd::register_with_interest(file, Interest::READABLE)? };
        Ok(Inotify { fd })
    }

    /// Watches the directory `dir`; returns the watch number events carry. Watching a
    /// directory again returns the same number. Fails with ENOSPC when the user's watch
    /// limit (`fs.inotify.max_user_watches`) is reached.
    pub fn watch_dir(&self, dir: &Path) -> io::Result<i32> {
        let path = CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: `path` is NUL-terminated and lives across the call.
        let wd =
            unsafe { libc::inotify_add_watch(self.fd.get_ref().as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Waits for notices and returns those one read gives.
    pub async fn read(&self) -> io::Result<Vec<Event>> {
        // Room for a few dozen notices with names up to NAME_MAX.
        let mut buf = [0u8; 4096];
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| {
                let mut file = fd.get_ref();
                file.read(&mut buf)
            }) {
                Ok(read) => return read.map(|n| parse(&buf[..n])),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The notices in what one read(2) returned; a truncated tail is dropped.
fn parse(mut bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    while bytes.len() >= HEADER {
        let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let Some(name) = bytes.get(HEADER..HEADER + len) else {
            break;
        };
        // The name is NUL-padded to an alignment.
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        events.push(Event {
            wd,
            mask,
            name: name[..end].to_vec(),
        });
        bytes = &bytes[HEADER + len..];
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(wd: i32, mask: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&wd.to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(padded as u32).to_ne_bytes());
        let mut name = name.to_vec();
        name.resize(padded, 0);
        out.extend_from_slice(&name);
        out
    }

    /// Notices are split at their lengths and names lose their NUL padding; a truncated
    /// last notice is dropped.
    #[test]
    fn notices_are_parsed() {
        let mut bytes = raw(1, libc::IN_MOVED_TO, b"server.crt", 16);
        bytes.extend(raw(2, libc::IN_DELETE_SELF, b"", 0));
        bytes.extend(&raw(3, libc::IN_CREATE, b"x", 16)[..20]);
        let events = parse(&bytes);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].name(), "server.crt");
        assert_eq!(events[0].wd, 1);
        assert!(events[1].directory_gone());
        assert!(events[1].name.is_empty());
    }

    /// A rename into a watched directory is seen, with the new name.
    #[tokio::test]
    async fn a_rename_into_the_directory_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let inotify = Inotify::new().unwrap();
        let wd = inotify.watch_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("new.tmp"), "x").unwrap();
        std::fs::rename(dir.path().join("new.tmp"), dir.path().join("server.crt")).unwrap();
        let mut seen = Vec::new();
        while !seen
            .iter()
            .any(|e: &Event| e.name() == "server.crt" && e.mask & libc::IN_MOVED_TO != 0)
        {
            seen.extend(inotify.read().await.unwrap());
        }
        assert!(seen.iter().all(|e| e.wd == wd));
    }
}

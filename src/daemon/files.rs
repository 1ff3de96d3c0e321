//! Following the TLS files on disk (`tls.watch`): the certificate, the key (when it is a
//! file), the client CA and the CRLs, rewritten by another tool (certbot, step-ca's agent,
//! cert-manager's csi driver, an Ansible run), are read again without SIGHUP.
//!
//! inotify on the files' directories wakes the task (a rename over a file, an in-place
//! rewrite, Kubernetes' `..data` symlink swap). It waits until the files have been quiet
//! for `tls.watch_debounce`, compares each file's inode, size and times with what it saw
//! last, and when one differs asks the daemon for [`Control::Identity`]. A pair that does
//! not go together (the key not written yet, or a wrong one) keeps the identity in use and
//! the log says why; the next write is picked up the same way. When inotify cannot be set
//! up (the user's instance or watch limit, a directory gone), or with `tls.watch = "poll"`
//! (network and FUSE filesystems, whose remote changes inotify does not see), it looks at
//! the files every `tls.watch_interval` instead.
//!
//! Directories are watched, not files: tools replace a certificate by writing a temporary
//! file and renaming it over the old one (a watch on the old file's inode would see
//! nothing), and Kubernetes' atomic writer swaps a `..data` symlink beside the files. The
//! `inotify` crate is the seam to the kernel: its event stream waits on the descriptor with
//! tokio's `AsyncFd`, so while nothing changes there is no thread, no timer and no wakeup
//! (the system calls, and their `unsafe`, are the crate's; the daemon had its own).

use std::{
    ffi::{OsStr, OsString},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures_util::StreamExt;
use inotify::{EventMask, EventOwned, EventStream, Inotify, WatchMask, Watches};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{Control, Running};
use crate::config::{self, FileWatch, Material, WatchMode};

/// Everything that can mean a file in a watched directory was written, replaced, removed or
/// had its mode changed, and the directory itself going away.
const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MODIFY)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// Notices that mean anything may have changed: notices lost (the kernel's queue
/// overflowed), a watched directory removed or moved, or its watch gone.
const ANYTHING: EventMask = EventMask::Q_OVERFLOW
    .union(EventMask::DELETE_SELF)
    .union(EventMask::MOVE_SELF)
    .union(EventMask::IGNORED);

/// The kernel's notices, read into a buffer with room for a few dozen with names up to
/// NAME_MAX.
type Notices = EventStream<[u8; 4096]>;

/// Follows the TLS files of the running config until `control` closes; starts over when a
/// reload changes the `[tls]` section.
pub(super) async fn run(
    mut running: watch::Receiver<Arc<Running>>,
    control: mpsc::Sender<Control>,
) {
    loop {
        let tls = running.borrow_and_update().config.tls.clone();
        let following = follow(&tls, &control);
        tokio::pin!(following);
        loop {
            tokio::select! {
                () = &mut following => return,
                changed = running.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if running.borrow().config.tls != tls {
                        break;
                    }
                }
            }
        }
    }
}

/// Follows the files of `tls` as its `watch` says; returns when `control` closes.
async fn follow(tls: &config::Tls, control: &mpsc::Sender<Control>) {
    let files: Arc<[PathBuf]> = files(tls).into();
    let watch = &tls.watch;
    match watch.mode {
        WatchMode::Off => std::future::pending().await,
        WatchMode::Poll => poll(&files, watch, control).await,
        WatchMode::Auto => {
            if let Err(err) = notify(&files, watch, control).await {
                tracing::warn!(
                    reason = %err,
                    interval_ms = watch.interval.as_millis() as u64,
                    "cannot follow the TLS files by inotify; looking at them every tls.watch_interval instead"
                );
                poll(&files, watch, control).await;
            }
        }
    }
}

/// The files an identity is read from, each once. With `[tls.issue]` the certificate and
/// key are the state file, which only the renewal task writes, and it asks for the new
/// identity itself: following it too would build every renewed identity twice.
fn files(tls: &config::Tls) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if tls.issue.is_none() {
        files.push(tls.cert.clone());
        if let Material::Path(key) = &tls.key {
            files.push(key.clone());
        }
    }
    for path in std::iter::once(&tls.client_ca).chain(&tls.crl) {
        if !files.contains(path) {
            files.push(path.clone());
        }
    }
    files
}

fn show(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What tells a changed file: its device and inode (a rename over it, a symlink swapped),
/// size and modification and change times (an in-place rewrite, a chmod). `None`: missing.
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Each file's stamp, read off the runtime (a hung mount must not stall the daemon).
async fn look(files: &Arc<[PathBuf]>) -> Vec<Stamp> {
    let files = files.clone();
    tokio::task::spawn_blocking(move || files.iter().map(|f| stamp(f)).collect())
        .await
        .unwrap_or_default()
}

/// The files whose stamps differ.
fn changed(files: &[PathBuf], before: &[Stamp], now: &[Stamp]) -> String {
    let changed: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .filter(|&(i, _)| before.get(i) != now.get(i))
        .map(|(_, f)| f.clone())
        .collect();
    show(&changed)
}

fn following(files: &[PathBuf], how: &str) {
    tracing::info!(files = %show(files), "following the TLS files on disk by {how}");
}

/// Asks the daemon to read the identity again; false when it is gone.
async fn ask(control: &mpsc::Sender<Control>, files: &str) -> bool {
    tracing::info!(
        files,
        "TLS files changed on disk; reading the identity again"
    );
    control
        .send(Control::Identity {
            why: "TLS files changed on disk",
        })
        .await
        .is_ok()
}

/// The names that matter, with the watch (directory) each is in: each file's own
/// directory, and that of the file its symlinks lead to.
type Names = Vec<(i32, OsString)>;

/// A new inotify instance read on the runtime. Fails when the kernel has none (ENOSYS) or
/// the user's instance limit is reached (EMFILE, `fs.inotify.max_user_instances`).
fn notices() -> io::Result<Notices> {
    Inotify::init()
        .and_then(|inotify| inotify.into_event_stream([0; 4096]))
        .map_err(|e| io::Error::new(e.kind(), format!("inotify_init1: {e}")))
}

/// The next notice. The stream does not end while its descriptor is open; if it did, that
/// is an error, and the files are polled.
async fn next(notices: &mut Notices) -> io::Result<EventOwned> {
    notices.next().await.unwrap_or_else(|| {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "inotify: no more notices",
        ))
    })
}

/// Watches the directories of `files` (again: a symlink may now lead elsewhere). Watching
/// a directory again gives the same watch; ENOSPC when the user's watch limit
/// (`fs.inotify.max_user_watches`) is reached.
fn add_watches(watches: &mut Watches, files: &[PathBuf]) -> io::Result<Names> {
    let mut names = Vec::new();
    for file in files {
        let real = std::fs::canonicalize(file).ok();
        for path in std::iter::once(file).chain(real.as_ref()) {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let wd = watches.add(dir, MASK).map_err(|e| {
                io::Error::new(e.kind(), format!("watching {}: {e}", dir.display()))
            })?;
            names.push((wd.get_watch_descriptor_id(), name.to_owned()));
        }
    }
    Ok(names)
}

/// Whether a notice can be about one of the files: its name in its directory's watch, a
/// `..`-prefixed name (Kubernetes' atomic writer: `..data` and the timestamped directories
/// it points to), a directory gone, or notices lost.
fn relevant(wd: i32, mask: EventMask, name: &OsStr, names: &Names) -> bool {
    mask.intersects(ANYTHING)
        || name.as_encoded_bytes().starts_with(b"..")
        || names
            .iter()
            .any(|(watch, followed)| *watch == wd && followed == name)
}

/// [`relevant`] for a notice as read.
fn matters(event: &EventOwned, names: &Names) -> bool {
    let name = event.name.as_deref().unwrap_or_default();
    relevant(event.wd.get_watch_descriptor_id(), event.mask, name, names)
}

/// Follows by inotify; returns Ok when `control` closes, an error when inotify cannot be
/// set up or a directory cannot be watched again.
async fn notify(
    files: &Arc<[PathBuf]>,
    watch: &FileWatch,
    control: &mpsc::Sender<Control>,
) -> io::Result<()> {
    let mut notices = notices()?;
    let mut names = add_watches(&mut notices.watches(), files)?;
    let mut seen = look(files).await;
    following(files, "inotify");
    loop {
        while !matters(&next(&mut notices).await?, &names) {}
        // Until the writer is done: every further notice restarts the quiet time.
        let quiet = tokio::time::sleep(watch.debounce);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                () = &mut quiet => break,
                event = next(&mut notices) => {
                    if matters(&event?, &names) {
                        quiet.as_mut().reset(Instant::now() + watch.debounce);
                    }
                }
            }
        }
        // A symlink may now lead to another directory (the `..data` swap).
        names = add_watches(&mut notices.watches(), files)?;
        let now = look(files).await;
        if now != seen {
            if !ask(control, &changed(files, &seen, &now)).await {
                return Ok(());
            }
            seen = now;
        }
    }
}

/// Follows by looking at every file's stamp each interval; a change is read once the
/// stamps have stayed the same for the debounce time. Returns when `control` closes.
async fn poll(files: &Arc<[PathBuf]>, watch: &FileWatch, control: &mpsc::Sender<Control>) {
    let mut seen = look(files).await;
    following(files, "polling");
    loop {
        tokio::time::sleep(watch.interval).await;
        let mut now = look(files).await;
        if now == seen {
            continue;
        }
        loop {
            tokio::time::sleep(watch.debounce).await;
            let again = look(files).await;
            if again == now {
                break;
            }
            now = again;
        }
        if !ask(control, &changed(files, &seen, &now)).await {
            return;
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(key: Material, crl: Vec<PathBuf>) -> config::Tls {
        config::Tls {
            cert: "/d/server.crt".into(),
            key,
            client_ca: "/d/ca.crt".into(),
            crl,
            issue: None,
            watch: FileWatch {
                mode: WatchMode::Auto,
                debounce: std::time::Duration::ZERO,
                interval: std::time::Duration::from_secs(1),
            },
        }
    }

    /// A key pulled from a secret is not a file to follow; a file named twice is followed
    /// once.
    #[test]
    fn the_files_of_an_identity() {
        let t = tls(Material::Secret("k".into()), vec!["/d/ca.crt".into()]);
        assert_eq!(
            files(&t),
            [Path::new("/d/server.crt"), Path::new("/d/ca.crt")]
        );
        let t = tls(Material::Path("/d/server.key".into()), vec![]);
        assert_eq!(files(&t).len(), 3);
    }

    /// With `[tls.issue]` the state file is the renewal task's: only the client CA and the
    /// CRLs are followed.
    #[test]
    fn the_issued_file_is_left_to_the_renewal_task() {
        let issue = "[tls.issue]\naddr = \"https://bao:8200\"\nca_cert = \"/ca\"\nrole = \"r\"\ncommon_name = \"d\"\nauth = \"cert\"\nstate_dir = \"/var/lib/v\"\n";
        let mut t = tls(
            Material::Path("/d/server.key".into()),
            vec!["/d/crl.pem".into()],
        );
        t.issue = config::Config::parse("t", issue).unwrap().tls.issue;
        assert_eq!(files(&t), [Path::new("/d/ca.crt"), Path::new("/d/crl.pem")]);
    }

    /// A notice counts when it names a followed file in its directory's watch, a `..`
    /// name, a directory gone, or lost notices.
    #[test]
    fn relevant_notices() {
        let names = vec![(1, OsString::from("server.crt"))];
        let event = |wd, mask, name: &str| relevant(wd, mask, OsStr::new(name), &names);
        assert!(event(1, EventMask::MOVED_TO, "server.crt"));
        assert!(event(1, EventMask::MOVED_TO, "..data"));
        assert!(event(-1, EventMask::Q_OVERFLOW, ""));
        assert!(event(2, EventMask::DELETE_SELF, ""));
        assert!(event(2, EventMask::IGNORED, ""));
        assert!(!event(1, EventMask::CREATE, ".server.crt.swp"));
        assert!(!event(2, EventMask::CLOSE_WRITE, "server.crt"));
    }

    /// A rename over a followed file is seen through its directory's watch, with the
    /// file's name (its NUL padding gone), and counts; a file written beside it does not.
    #[tokio::test]
    async fn a_rename_over_a_followed_file_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.crt");
        std::fs::write(&file, "a").unwrap();
        let mut notices = notices().unwrap();
        let names = add_watches(&mut notices.watches(), std::slice::from_ref(&file)).unwrap();
        std::fs::write(dir.path().join("other"), "x").unwrap();
        std::fs::write(dir.path().join("new.tmp"), "x").unwrap();
        std::fs::rename(dir.path().join("new.tmp"), &file).unwrap();
        let limit = std::time::Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout(limit, next(&mut notices))
                .await
                .expect("the rename is seen")
                .unwrap();
            let name = event.name.as_deref().unwrap_or_default();
            assert_eq!(matters(&event, &names), name == "server.crt", "{event:?}");
            if event.mask.contains(EventMask::MOVED_TO) {
                assert_eq!(name, "server.crt");
                break;
            }
        }
    }

    /// A directory that cannot be watched is an error that names it, which sends the
    /// follower to polling.
    #[tokio::test]
    async fn an_unwatchable_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone").join("server.crt");
        let notices = notices().unwrap();
        let err = add_watches(&mut notices.watches(), &[missing]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("gone"), "{err}");
    }

    /// `tls.watch` is auto, poll or off; anything else is refused naming the key.
    #[test]
    fn watch_keys_are_checked() {
        let config = config::Config::parse("t.toml", "[tls]\nwatch = \"poll\"\n").unwrap();
        assert_eq!(config.tls.watch.mode, WatchMode::Poll);
        assert_eq!(
            config.tls.watch.debounce,
            std::time::Duration::from_millis(500)
        );
        let err = config::Config::parse("t.toml", "[tls]\nwatch = \"inotify\"\n").unwrap_err();
        assert!(err.to_string().contains("tls.watch"), "{err}");
        assert!(err.to_string().contains("auto, poll or off"), "{err}");
    }

    /// A rename over a file changes its stamp; the file is named in what changed.
    #[test]
    fn a_replaced_file_has_a_new_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.crt");
        std::fs::write(&file, "a").unwrap();
        let before = vec![stamp(&file)];
        std::fs::write(dir.path().join("tmp"), "a").unwrap();
        std::fs::rename(dir.path().join("tmp"), &file).unwrap();
        let now = vec![stamp(&file)];
        assert_ne!(before, now);
        assert_eq!(
            changed(std::slice::from_ref(&file), &before, &now),
            file.display().to_string()
        );
    }
}

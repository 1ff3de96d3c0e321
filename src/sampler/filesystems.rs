//! Filesystem sizes, from statvfs(2) on the mounts in /proc/self/mountinfo, each read under
//! a deadline.
//!
//! statvfs on a hung NFS, CIFS or FUSE mount blocks for as long as its server does not
//! answer (node_exporter users meet this as #244, #1353, #3058), and so does the stat of its
//! mount point. So the calls run on a worker thread, and the sampler waits for each at most
//! `metrics.filesystem_timeout`. A mount that does not answer in time is reported `stuck`,
//! with no sizes, and the worker is left to it: a fresh worker reads the other mounts. The
//! stuck mount is not asked again until the call that hung returns; then it is read like
//! any other. At most [`MAX_HUNG`] workers are left hanging; past that, the mounts not yet
//! read are left out of that sample rather than each costing a timeout.

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::Duration,
};

use tracing::{info, warn};

use crate::proto::metrics::Filesystem;

/// Filesystem types that never describe storage, even when they report a size.
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tracefs",
];

/// Workers that may be left inside calls that passed their deadline.
pub const MAX_HUNG: usize = 8;

/// A mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    /// The mount source: `/dev/vda1`, `tmpfs`, `server:/export`.
    pub device: String,
    pub fs_type: String,
    /// Mounted read-only (the per-mount or the superblock options say `ro`).
    pub read_only: bool,
}

/// What statvfs said of a mount whose point is a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub available_bytes: u64,
    pub files: u64,
    pub files_free: u64,
    pub read_only: bool,
}

/// The answer for one mount: `Ok(None)` when its mount point is not a directory (a single
/// file bind-mounted into a sandbox is not a filesystem).
type Answer = io::Result<Option<Stats>>;

/// A thread that reads mounts one after another, in the order asked.
struct Worker {
    requests: mpsc::Sender<Vec<PathBuf>>,
    answers: mpsc::Receiver<Answer>,
}

impl Worker {
    fn spawn() -> io::Result<Worker> {
        let (requests, asked) = mpsc::channel::<Vec<PathBuf>>();
        let (answer, answers) = mpsc::channel();
        thread::Builder::new()
            .name("vitals-statfs".into())
            .spawn(move || {
                for batch in asked {
                    for path in batch {
                        if answer.send(stat(&path)).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(Worker { requests, answers })
    }
}

/// How a worker's batch ended.
enum Outcome {
    /// Every mount answered.
    Done,
    /// This mount did not answer in time; the worker stays inside its call.
    Hung(PathBuf),
    /// The worker thread went away (it does not, short of a bug).
    Died,
}

/// The filesystem collector; see the module docs.
pub struct Filesystems {
    timeout: Duration,
    mounts: Vec<Mount>,
    worker: Option<Worker>,
    /// Workers still inside the call that passed its deadline, with the mount they hang on.
    hung: Vec<(PathBuf, Worker)>,
}

impl Filesystems {
    pub fn new(timeout: Duration) -> Filesystems {
        Filesystems {
            timeout,
            mounts: Vec::new(),
            worker: None,
            hung: Vec::new(),
        }
    }

    /// Re-reads the mount table.
    pub fn relist(&mut self) -> Result<(), String> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        self.mounts = parse_mountinfo(&text)
            .filter(|m| !PSEUDO_FILESYSTEMS.contains(&m.fs_type.as_str()))
            .collect();
        Ok(())
    }

    /// Every storage filesystem with its sizes, and every stuck mount without them.
    pub fn sample(&mut self) -> Vec<Filesystem> {
        self.reap();
        let hung: Vec<PathBuf> = self.hung.iter().map(|(p, _)| p.clone()).collect();
        let mut read: Vec<(&Mount, Option<Answer>)> = Vec::with_capacity(self.mounts.len());
        let mut pending: Vec<&Mount> = Vec::new();
        for mount in &self.mounts {
            if hung.contains(&mount.point) {
                read.push((mount, None));
            } else {
                pending.push(mount);
            }
        }
        // One worker normally reads every mount; each that hangs costs one more.
        let mut workers = 0;
        while !pending.is_empty() && self.hung.len() < MAX_HUNG && workers <= MAX_HUNG {
            workers += 1;
            let worker = match self.worker.take() {
                Some(worker) => worker,
                None => match Worker::spawn() {
                    Ok(worker) => worker,
                    Err(e) => {
                        warn!("starting a statfs thread: {e}; filesystems are left out");
                        break;
                    }
                },
            };
            let batch: Vec<PathBuf> = pending.iter().map(|m| m.point.clone()).collect();
            if worker.requests.send(batch).is_err() {
                continue;
            }
            let mut outcome = Outcome::Done;
            let mut answered = 0;
            for mount in &pending {
                match worker.answers.recv_timeout(self.timeout) {
                    Ok(answer) => read.push((mount, Some(answer))),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        warn!(
                            mount_point = %mount.point.display(),
                            timeout_ms = self.timeout.as_millis() as u64,
                            "filesystem did not answer statfs in time; reporting it stuck until it does"
                        );
                        read.push((mount, None));
                        outcome = Outcome::Hung(mount.point.clone());
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => outcome = Outcome::Died,
                }
                if let Outcome::Died = outcome {
                    break;
                }
                answered += 1;
                if let Outcome::Hung(_) = outcome {
                    break;
                }
            }
            pending.drain(..answered);
            match outcome {
                Outcome::Done => self.worker = Some(worker),
                Outcome::Hung(point) => self.hung.push((point, worker)),
                Outcome::Died => {}
            }
        }
        report(&read)
    }

    /// Forgets the workers whose hung call has returned: their mounts are read again.
    fn reap(&mut self) {
        self.hung
            .retain(|(point, worker)| match worker.answers.try_recv() {
                Err(mpsc::TryRecvError::Empty) => true,
                Ok(_) | Err(mpsc::TryRecvError::Disconnected) => {
                    info!(mount_point = %point.display(), "filesystem answers statfs again");
                    false
                }
            });
    }
}

/// The filesystems to report from what each mount answered (`None`: stuck): storage on a
/// directory, a block device once at its shortest mount point, and stuck mounts as such.
fn report(read: &[(&Mount, Option<Answer>)]) -> Vec<Filesystem> {
    let storage: Vec<(&Mount, Option<Stats>)> = read
        .iter()
        .filter_map(|(mount, answer)| match answer {
            None => Some((*mount, None)),
            Some(Ok(Some(stats))) if stats.total_bytes > 0 => Some((*mount, Some(*stats))),
            Some(_) => None,
        })
        .collect();
    storage
        .iter()
        .enumerate()
        .filter(|(i, (mount, stats))| {
            let shorter_twin = stats.is_some()
                && mount.device.starts_with("/dev/")
                && storage.iter().enumerate().any(|(j, (other, other_stats))| {
                    j != *i
                        && other_stats.is_some()
                        && other.device == mount.device
                        && (other.point.as_os_str().len(), j) < (mount.point.as_os_str().len(), *i)
                });
            !shorter_twin
        })
        .map(|(_, (mount, stats))| {
            let mut fs = Filesystem {
                mount_point: mount.point.to_string_lossy().into_owned(),
                device: mount.device.clone(),
                fs_type: mount.fs_type.clone(),
                read_only: mount.read_only,
                ..Filesystem::default()
            };
            match stats {
                Some(s) => {
                    fs.total_bytes = s.total_bytes;
                    fs.available_bytes = s.available_bytes;
                    fs.free_bytes = s.free_bytes;
                    fs.files = s.files;
                    fs.files_free = s.files_free;
                    fs.read_only |= s.read_only;
                }
                None => fs.stuck = true,
            }
            fs
        })
        .collect()
}

/// The mounts of a /proc/self/mountinfo text. Fields: id, parent, major:minor, root, mount
/// point, options, optional fields up to `-`, type, source, superblock options; paths
/// escape space, tab, newline and backslash as octal.
pub fn parse_mountinfo(text: &str) -> impl Iterator<Item = Mount> + '_ {
    text.lines().filter_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let point = fields.nth(4)?;
        let options = fields.next()?;
        let mut after = after.split(' ');
        let (fs_type, source, super_options) = (after.next()?, after.next()?, after.next()?);
        let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        Some(Mount {
            point: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(point))),
            device: String::from_utf8_lossy(&unescape(source)).into_owned(),
            fs_type: fs_type.to_string(),
            read_only: ro(options) || ro(super_options),
        })
    })
}

/// `\040` and friends back into bytes.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// What the worker does for one mount point: is it a directory, and what statvfs says.
fn stat(point: &Path) -> Answer {
    if !fs::metadata(point)?.is_dir() {
        return Ok(None);
    }
    statvfs(point).map(Some)
}

/// statvfs(2). The one call here that needs libc: std has no statvfs.
#[allow(unsafe_code)]
fn statvfs(path: &Path) -> io::Result<Stats> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    let mut buf = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `buf` is a
    // properly aligned statvfs the kernel fills in; it is read only when the call succeeds.
    let rc = unsafe { libc::statvfs(path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it wrote the whole struct.
    let s = unsafe { buf.assume_init() };
    // The fields are 32 bits wide on 32-bit ARM, 64 elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let unit = (s.f_frsize as u64).max(1);
    #[allow(clippy::unnecessary_cast)]
    Ok(Stats {
        total_bytes: (s.f_blocks as u64).saturating_mul(unit),
        free_bytes: (s.f_bfree as u64).saturating_mul(unit),
        available_bytes: (s.f_bavail as u64).saturating_mul(unit),
        files: s.f_files as u64,
        files_free: s.f_ffree as u64,
        read_only: s.f_flag & libc::ST_RDONLY != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(point: &str, device: &str) -> Mount {
        Mount {
            point: point.into(),
            device: device.into(),
            fs_type: "ext4".into(),
            read_only: false,
        }
    }

    fn sized(total: u64) -> Option<Answer> {
        Some(Ok(Some(Stats {
            total_bytes: total,
            free_bytes: total / 2,
            available_bytes: total / 4,
            files: 100,
            files_free: 50,
            read_only: false,
        })))
    }

    /// mountinfo lines give the mount point (unescaped), type, source and read-only flag.
    #[test]
    fn mountinfo_is_parsed() {
        let text = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
28 22 0:24 / /mnt/with\\040space ro,nosuid master:3 - fuse.hangfs hangfs rw,user_id=0
30 22 0:26 / /boot rw - vfat /dev/vda15 ro
bogus line without the separator
";
        let mounts: Vec<Mount> = parse_mountinfo(text).collect();
        assert_eq!(mounts.len(), 3, "{mounts:?}");
        assert_eq!(mounts[0].point, Path::new("/"));
        assert_eq!(
            (mounts[0].device.as_str(), mounts[0].read_only),
            ("/dev/vda1", false)
        );
        assert_eq!(mounts[1].point, Path::new("/mnt/with space"));
        assert_eq!(mounts[1].fs_type, "fuse.hangfs");
        assert!(mounts[1].read_only, "per-mount ro");
        assert!(mounts[2].read_only, "superblock ro");
    }

    /// Single-file binds and zero-sized mounts are not shown, a block device shows once, at
    /// its shortest mount point, tmpfs instances all show, and a stuck mount shows as stuck.
    #[test]
    fn filesystems_to_report() {
        let mounts = [
            mount("/var/tmp", "/dev/vda"),
            mount("/", "/dev/vda"),
            mount("/usr/local/bin/vitalsd", "/dev/vda"),
            mount("/boot", "/dev/vda1"),
            mount("/run", "tmpfs"),
            mount("/tmp", "tmpfs"),
            mount("/empty", "none"),
            mount("/mnt/nfs", "server:/export"),
        ];
        let answers = [
            sized(10),
            sized(10),
            Some(Ok(None)),
            sized(5),
            sized(1),
            sized(1),
            sized(0),
            None,
        ];
        let read: Vec<_> = mounts.iter().zip(answers).collect();
        let shown: Vec<(String, bool)> = report(&read)
            .into_iter()
            .map(|f| (f.mount_point, f.stuck))
            .collect();
        let expected = [
            ("/", false),
            ("/boot", false),
            ("/run", false),
            ("/tmp", false),
            ("/mnt/nfs", true),
        ];
        assert_eq!(shown, expected.map(|(p, s)| (p.to_string(), s)).to_vec());
        let root = &report(&read)[0];
        assert_eq!(
            (
                root.total_bytes,
                root.free_bytes,
                root.available_bytes,
                root.files,
                root.files_free
            ),
            (10, 5, 2, 100, 50)
        );
    }

    /// This machine's root filesystem reads with sizes and inodes, and pseudo filesystems
    /// are not listed.
    #[test]
    fn this_machine_has_a_root_filesystem() {
        let mut filesystems = Filesystems::new(Duration::from_secs(5));
        filesystems.relist().unwrap();
        assert!(
            filesystems
                .mounts
                .iter()
                .all(|m| m.fs_type != "proc" && m.fs_type != "sysfs"),
            "{:?}",
            filesystems.mounts
        );
        let sampled = filesystems.sample();
        let root = sampled
            .iter()
            .find(|f| f.mount_point == "/")
            .unwrap_or_else(|| panic!("no / in {sampled:?}"));
        assert!(root.total_bytes > 0 && root.files > 0, "{root:?}");
        assert!(root.available_bytes <= root.free_bytes && root.free_bytes <= root.total_bytes);
        assert!(!root.stuck);
    }

    /// Octal escapes decode; a backslash not followed by three octal digits stays.
    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), b"a b\tc\\d");
        assert_eq!(unescape("x\\9y\\04"), b"x\\9y\\04");
    }
}

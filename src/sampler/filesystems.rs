//! Filesystem sizes, from statvfs(2) on the mounts in /proc/self/mountinfo, each read under
//! a deadline, and never by a thread a hung FUSE server could keep.
//!
//! statvfs on a hung NFS, CIFS or FUSE mount blocks for as long as its server does not
//! answer (node_exporter users meet this as #244, #1353, #3058), and so does the stat of its
//! mount point. So the calls run on workers, and the sampler waits for each at most
//! `metrics.filesystem_timeout`. A mount that does not answer in time is reported `stuck`,
//! with no sizes, and its worker is left to it: a fresh worker reads the other mounts. The
//! stuck mount is not asked again until the call that hung returns; then it is read like
//! any other.
//!
//! Workers come in three pools, so a hang in one kind of mount never holds up another:
//! local mounts (and every mount holding a `health.disk_paths` entry, read first), remote
//! ones (NFS, CIFS, anything not backed by a block device), and FUSE. Each pool leaves at
//! most [`MAX_HUNG`] workers hanging; past that, the mounts of that pool not yet read are
//! reported unread (with the reason) rather than each costing a timeout, and a stuck
//! remote mount never keeps `/` or a watched path from being read.
//!
//! FUSE is the one kind whose wait is not interruptible: once the FUSE server has read a
//! request, the kernel waits for its answer even through SIGKILL, so a thread of ours
//! inside it would keep the whole process from exiting. FUSE mounts are left out by
//! default (`metrics.filesystem_types_exclude`, as node_exporter leaves out other types);
//! those still read (a `health.disk_paths` entry on one, or the types list changed) are
//! read by a child process (`vitalsd --statfs-worker`, [`worker_main`]), which a hung mount
//! may keep; the daemon itself exits.

use std::{
    ffi::{CString, OsStr},
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use regex_lite::Regex;
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

/// Workers of one pool that may be left inside calls that passed their deadline.
pub const MAX_HUNG: usize = 8;

/// The argument that makes `vitalsd` a statfs worker ([`worker_main`]) instead of a daemon.
pub const WORKER_ARG: &str = "--statfs-worker";

/// The longest answer line a statfs worker process may write.
const MAX_ANSWER_LINE: u64 = 256;

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

/// Which mounts are read: node_exporter's exclusions, except that a mount holding one of
/// `disk_paths` is always read (health judges it).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub disk_paths: Vec<PathBuf>,
    pub mount_points_exclude: Option<Regex>,
    pub types_exclude: Option<Regex>,
}

/// The three kinds of worker; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Local = 0,
    Remote = 1,
    Fuse = 2,
}

impl Pool {
    fn of(mount: &Mount) -> Pool {
        let t = mount.fs_type.as_str();
        if t == "fuse" || t == "fuseblk" || t == "virtiofs" || t.starts_with("fuse.") {
            Pool::Fuse
        } else if mount.device.starts_with("/dev/") || LOCAL_TYPES.contains(&t) {
            Pool::Local
        } else {
            Pool::Remote
        }
    }
}

/// Types that are in memory or on a local device even though their source is not a
/// `/dev/` path.
const LOCAL_TYPES: &[&str] = &["tmpfs", "ramfs", "overlay", "squashfs", "zfs", "btrfs"];

/// A worker: a thread, or a thread relaying to a statfs worker process, that reads mounts
/// one after another in the order asked.
struct Worker {
    requests: mpsc::Sender<Vec<PathBuf>>,
    answers: mpsc::Receiver<Answer>,
}

impl Worker {
    fn spawn(pool: Pool, helper: &Path) -> io::Result<Worker> {
        let (requests, asked) = mpsc::channel::<Vec<PathBuf>>();
        let (answer, answers) = mpsc::channel();
        let builder = thread::Builder::new()
            .name("vitals-statfs".into())
            .stack_size(64 << 10);
        if pool == Pool::Fuse {
            let mut child = Command::new(helper)
                .arg(WORKER_ARG)
                .env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other("the statfs worker has no pipes"));
            };
            builder.spawn(move || {
                relay(&asked, &answer, stdin, stdout);
                // The process ends when its input closes; one left inside a hung FUSE
                // call is killed now and goes when the call returns.
                let _ = child.kill();
                let _ = child.wait();
            })?;
        } else {
            builder.spawn(move || {
                for batch in asked {
                    for path in batch {
                        if answer.send(stat(&path)).is_err() {
                            return;
                        }
                    }
                }
            })?;
        }
        Ok(Worker { requests, answers })
    }
}

/// Hands each asked path to a statfs worker process and its answer back, until either side
/// goes away.
fn relay(
    asked: &mpsc::Receiver<Vec<PathBuf>>,
    answer: &mpsc::Sender<Answer>,
    mut stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
) {
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    for batch in asked {
        for path in batch {
            let mut request = path.as_os_str().as_bytes().to_vec();
            request.push(0);
            let got = stdin
                .write_all(&request)
                .and_then(|()| stdin.flush())
                .and_then(|()| {
                    line.clear();
                    (&mut stdout).take(MAX_ANSWER_LINE).read_line(&mut line)
                })
                .and_then(|n| match n {
                    0 => Err(io::Error::other("the statfs worker process ended")),
                    _ => parse_answer(&line),
                });
            let ended = got.is_err();
            if answer.send(got).is_err() || ended {
                return;
            }
        }
    }
}

/// A statfs worker process's answer line back into an [`Answer`].
fn parse_answer(line: &str) -> Answer {
    let mut words = line.split_ascii_whitespace();
    let bad = || io::Error::other(format!("the statfs worker said {:?}", line.trim_end()));
    match words.next() {
        Some("notdir") => Ok(None),
        Some("err") => {
            let code = words.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            Err(io::Error::from_raw_os_error(code))
        }
        Some("ok") => {
            let mut n = || {
                words
                    .next()
                    .and_then(|w| w.parse::<u64>().ok())
                    .ok_or_else(bad)
            };
            Ok(Some(Stats {
                total_bytes: n()?,
                free_bytes: n()?,
                available_bytes: n()?,
                files: n()?,
                files_free: n()?,
                read_only: n()? != 0,
            }))
        }
        _ => Err(bad()),
    }
}

/// The answer line for `answer`, as [`parse_answer`] reads it.
fn answer_line(answer: &Answer) -> String {
    match answer {
        Ok(None) => "notdir\n".to_owned(),
        Ok(Some(s)) => format!(
            "ok {} {} {} {} {} {}\n",
            s.total_bytes,
            s.free_bytes,
            s.available_bytes,
            s.files,
            s.files_free,
            u8::from(s.read_only)
        ),
        Err(e) => format!("err {}\n", e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// `vitalsd --statfs-worker`: reads NUL-terminated mount points on stdin and answers each
/// with one line on stdout, until stdin closes. It runs no runtime, logs nothing and holds
/// nothing of the daemon's (its environment is cleared, its descriptors are only the
/// pipes): what a hung FUSE mount keeps is this process, not the daemon.
pub fn worker_main() -> std::process::ExitCode {
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = io::stdout().lock();
    let mut path = Vec::with_capacity(256);
    loop {
        path.clear();
        // A mount point is at most PATH_MAX (4096) bytes; a longer request is refused.
        match (&mut input).take(4097).read_until(0, &mut path) {
            Ok(0) | Err(_) => return std::process::ExitCode::SUCCESS,
            Ok(_) => {}
        }
        let answer = match path.pop() {
            Some(0) => stat(Path::new(OsStr::from_bytes(&path))),
            _ => Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG)),
        };
        if output
            .write_all(answer_line(&answer).as_bytes())
            .and_then(|()| output.flush())
            .is_err()
        {
            return std::process::ExitCode::SUCCESS;
        }
    }
}

/// How a worker's batch ended.
enum Outcome {
    /// Every mount answered.
    Done,
    /// This mount did not answer in time; the worker stays inside its call.
    Hung(PathBuf),
    /// The worker went away (a worker process that ended, short of a bug).
    Died,
}

/// One pool's workers: the one reading, and those left inside calls that hung.
#[derive(Default)]
struct Workers {
    live: Option<Worker>,
    hung: Vec<(PathBuf, Worker)>,
}

/// A listed mount: where it goes and whether a watched path is on it.
#[derive(Debug)]
struct Listed {
    mount: Mount,
    pool: Pool,
    watched: bool,
}

/// The filesystem collector; see the module docs.
pub struct Filesystems {
    timeout: Duration,
    selection: Selection,
    /// The statfs worker program (this executable).
    helper: PathBuf,
    mounts: Vec<Listed>,
    pools: [Workers; 3],
}

impl Filesystems {
    #[cfg(test)]
    pub fn new(timeout: Duration) -> Filesystems {
        Filesystems::with_selection(timeout, Selection::default())
    }

    /// Reading the mounts `selection` keeps.
    pub fn with_selection(timeout: Duration, selection: Selection) -> Filesystems {
        Filesystems {
            timeout,
            selection,
            helper: PathBuf::from("/proc/self/exe"),
            mounts: Vec::new(),
            pools: Default::default(),
        }
    }

    /// The watched paths changed (a reload): listed again at once.
    pub fn set_disk_paths(&mut self, disk_paths: Vec<PathBuf>) -> Result<(), String> {
        self.selection.disk_paths = disk_paths;
        self.relist()
    }

    /// Re-reads the mount table.
    pub fn relist(&mut self) -> Result<(), String> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        self.mounts = select(parse_mountinfo(&text).collect(), &self.selection);
        Ok(())
    }

    /// Every storage filesystem with its sizes, every stuck mount without them, and every
    /// mount that could not be read with the reason.
    pub fn sample(&mut self) -> Vec<Filesystem> {
        self.reap();
        let mut answers: Vec<Option<Option<Answer>>> = self.mounts.iter().map(|_| None).collect();
        for (i, listed) in self.mounts.iter().enumerate() {
            let hung = &self.pools[listed.pool as usize].hung;
            if hung.iter().any(|(p, _)| *p == listed.mount.point) {
                answers[i] = Some(None);
            }
        }
        for pool in [Pool::Local, Pool::Remote, Pool::Fuse] {
            // Watched mounts first: a pool out of workers never leaves those unread.
            let mut order: Vec<usize> = (0..self.mounts.len())
                .filter(|&i| self.mounts[i].pool == pool && answers[i].is_none())
                .collect();
            order.sort_by_key(|&i| !self.mounts[i].watched);
            self.read_pool(pool, &order, &mut answers);
        }
        let read: Vec<(&Mount, Option<Answer>)> = self
            .mounts
            .iter()
            .zip(answers)
            .map(|(listed, answer)| {
                let answer = answer.unwrap_or_else(|| {
                    Some(Err(io::Error::other(
                        "not read: no statfs worker could be started",
                    )))
                });
                (&listed.mount, answer)
            })
            .collect();
        report(&read)
    }

    /// Reads the mounts `order` names with `pool`'s workers, in that order; each that hangs
    /// costs a worker, up to [`MAX_HUNG`].
    fn read_pool(&mut self, pool: Pool, order: &[usize], answers: &mut [Option<Option<Answer>>]) {
        let mut pending = order;
        while !pending.is_empty() {
            let workers = &mut self.pools[pool as usize];
            let worker = match workers.live.take() {
                Some(worker) => worker,
                None if workers.hung.len() < MAX_HUNG => match Worker::spawn(pool, &self.helper) {
                    Ok(worker) => worker,
                    Err(e) => {
                        warn!(
                            ?pool,
                            "starting a statfs worker: {e}; those filesystems are left unread"
                        );
                        for &i in pending {
                            answers[i] = Some(Some(Err(io::Error::other(format!(
                                "not read: starting a statfs worker: {e}"
                            )))));
                        }
                        return;
                    }
                },
                None => {
                    for &i in pending {
                        answers[i] = Some(Some(Err(io::Error::other(format!(
                            "not read: {MAX_HUNG} statfs calls on {} mounts are still hung",
                            match pool {
                                Pool::Local => "local",
                                Pool::Remote => "remote",
                                Pool::Fuse => "FUSE",
                            }
                        )))));
                    }
                    return;
                }
            };
            let batch: Vec<PathBuf> = pending
                .iter()
                .map(|&i| self.mounts[i].mount.point.clone())
                .collect();
            if worker.requests.send(batch).is_err() {
                continue;
            }
            let mut outcome = Outcome::Done;
            let mut answered = 0;
            for &i in pending {
                let point = &self.mounts[i].mount.point;
                match worker.answers.recv_timeout(self.timeout) {
                    Ok(answer) => answers[i] = Some(Some(answer)),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        warn!(
                            mount_point = %point.display(),
                            timeout_ms = self.timeout.as_millis() as u64,
                            "filesystem did not answer statfs in time; reporting it stuck until it does"
                        );
                        answers[i] = Some(None);
                        outcome = Outcome::Hung(point.clone());
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
            pending = &pending[answered..];
            let workers = &mut self.pools[pool as usize];
            match outcome {
                Outcome::Done => workers.live = Some(worker),
                Outcome::Hung(point) => workers.hung.push((point, worker)),
                Outcome::Died => {}
            }
        }
    }

    /// Forgets the workers whose hung call has returned: their mounts are read again.
    fn reap(&mut self) {
        for workers in &mut self.pools {
            workers
                .hung
                .retain(|(point, worker)| match worker.answers.try_recv() {
                    Err(mpsc::TryRecvError::Empty) => true,
                    Ok(_) | Err(mpsc::TryRecvError::Disconnected) => {
                        info!(mount_point = %point.display(), "filesystem answers statfs again");
                        false
                    }
                });
        }
    }
}

/// The mounts to read: storage filesystems the exclusions keep, and every mount a watched
/// path is on (the one with the longest mount point that contains it, the last mounted of
/// equals), whatever the exclusions say.
fn select(all: Vec<Mount>, selection: &Selection) -> Vec<Listed> {
    let watched: Vec<usize> = selection
        .disk_paths
        .iter()
        .filter_map(|path| {
            all.iter()
                .enumerate()
                .filter(|(_, m)| path.starts_with(&m.point))
                .max_by_key(|(i, m)| (m.point.as_os_str().len(), *i))
                .map(|(i, _)| i)
        })
        .collect();
    all.into_iter()
        .enumerate()
        .filter_map(|(i, mount)| {
            let watched = watched.contains(&i);
            let excluded = PSEUDO_FILESYSTEMS.contains(&mount.fs_type.as_str())
                || selection
                    .mount_points_exclude
                    .as_ref()
                    .is_some_and(|r| r.is_match(&mount.point.to_string_lossy()))
                || selection
                    .types_exclude
                    .as_ref()
                    .is_some_and(|r| r.is_match(&mount.fs_type));
            (watched || !excluded).then(|| Listed {
                pool: Pool::of(&mount),
                mount,
                watched,
            })
        })
        .collect()
}

/// What became of one mount's read.
enum State {
    Sized(Stats),
    Stuck,
    Failed(String),
}

/// The filesystems to report from what each mount answered (`None`: stuck): storage on a
/// directory, a block device once at its shortest mount point, stuck mounts as such, and
/// mounts whose read failed with the reason (node_exporter's `device_error`).
fn report(read: &[(&Mount, Option<Answer>)]) -> Vec<Filesystem> {
    let storage: Vec<(&Mount, State)> = read
        .iter()
        .filter_map(|(mount, answer)| match answer {
            None => Some((*mount, State::Stuck)),
            Some(Ok(Some(stats))) if stats.total_bytes > 0 => Some((*mount, State::Sized(*stats))),
            Some(Ok(_)) => None,
            Some(Err(e)) => Some((*mount, State::Failed(e.to_string()))),
        })
        .collect();
    storage
        .iter()
        .enumerate()
        .filter(|(i, (mount, state))| {
            let sized = |s: &State| matches!(s, State::Sized(_));
            let shorter_twin = sized(state)
                && mount.device.starts_with("/dev/")
                && storage.iter().enumerate().any(|(j, (other, other_state))| {
                    j != *i
                        && sized(other_state)
                        && other.device == mount.device
                        && (other.point.as_os_str().len(), j) < (mount.point.as_os_str().len(), *i)
                });
            !shorter_twin
        })
        .map(|(_, (mount, state))| {
            let mut fs = Filesystem {
                mount_point: mount.point.to_string_lossy().into_owned(),
                device: mount.device.clone(),
                fs_type: mount.fs_type.clone(),
                read_only: mount.read_only,
                ..Filesystem::default()
            };
            match state {
                State::Sized(s) => {
                    fs.total_bytes = s.total_bytes;
                    fs.available_bytes = s.available_bytes;
                    fs.free_bytes = s.free_bytes;
                    fs.files = s.files;
                    fs.files_free = s.files_free;
                    fs.read_only |= s.read_only;
                }
                State::Stuck => fs.stuck = true,
                State::Failed(reason) => fs.error = reason.clone(),
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
                .all(|m| m.mount.fs_type != "proc" && m.mount.fs_type != "sysfs"),
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

    /// node_exporter's exclusions drop mounts by point and by type, pseudo filesystems are
    /// never read, and the mount a watched path is on (the longest containing mount point)
    /// is read whatever the exclusions say; FUSE, remote and local mounts go to their own
    /// pools.
    #[test]
    fn selection_keeps_watched_mounts_and_sorts_pools() {
        let m = |point: &str, device: &str, fs_type: &str| Mount {
            point: point.into(),
            device: device.into(),
            fs_type: fs_type.into(),
            read_only: false,
        };
        let all = vec![
            m("/", "/dev/vda", "ext4"),
            m("/dev/shm", "tmpfs", "tmpfs"),
            m("/proc", "proc", "proc"),
            m("/mnt/sshfs", "me@host:", "fuse.sshfs"),
            m("/mnt/watched", "hangfs", "fuse.hangfs"),
            m("/srv/nfs", "server:/export", "nfs4"),
            m("/run", "tmpfs", "tmpfs"),
        ];
        let selection = Selection {
            disk_paths: vec!["/mnt/watched/data".into(), "/".into()],
            mount_points_exclude: Some(Regex::new(crate::config::MOUNT_POINTS_EXCLUDE).unwrap()),
            types_exclude: Some(Regex::new(crate::config::FS_TYPES_EXCLUDE).unwrap()),
        };
        let listed: Vec<(String, Pool, bool)> = select(all, &selection)
            .into_iter()
            .map(|l| (l.mount.point.display().to_string(), l.pool, l.watched))
            .collect();
        assert_eq!(
            listed,
            [
                ("/".to_owned(), Pool::Local, true),
                ("/mnt/watched".to_owned(), Pool::Fuse, true),
                ("/srv/nfs".to_owned(), Pool::Remote, false),
                ("/run".to_owned(), Pool::Local, false),
            ]
        );
    }

    /// A statfs worker process's answers read back as they were: sizes, a mount point that
    /// is not a directory, and an errno; anything else is an error, not a guess.
    #[test]
    fn worker_answers_round_trip() {
        let sized = Stats {
            total_bytes: 1 << 40,
            free_bytes: 7,
            available_bytes: 5,
            files: 3,
            files_free: 2,
            read_only: true,
        };
        let back = |a: Answer| parse_answer(&answer_line(&a));
        assert_eq!(back(Ok(Some(sized))).unwrap(), Some(sized));
        assert_eq!(back(Ok(None)).unwrap(), None);
        let err = back(Err(io::Error::from_raw_os_error(libc::EACCES))).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        assert!(parse_answer("ok 1 2\n").is_err());
        assert!(parse_answer("garbage\n").is_err());
    }

    /// A mount whose read failed is reported with the reason and no sizes, not dropped.
    #[test]
    fn failed_reads_are_reported() {
        let mounts = [mount("/", "/dev/vda"), mount("/data", "/dev/vdb")];
        let answers = [
            sized(10),
            Some(Err(io::Error::other(
                "not read: 8 statfs calls on local mounts are still hung",
            ))),
        ];
        let read: Vec<_> = mounts.iter().zip(answers).collect();
        let shown = report(&read);
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[1].mount_point, "/data");
        assert!(shown[1].error.contains("still hung"), "{:?}", shown[1]);
        assert!(!shown[1].stuck && shown[1].total_bytes == 0);
    }
}

//! Health status: what grpc.health.v1 reports, derived from the daemon's lifecycle and from
//! real checks on a real sample (free disk, stuck mounts, available memory, temperature,
//! server certificate expiry, and the freshness of the sample itself).
//!
//! Two kinds of name, for the two kinds of probe:
//! - **Readiness**: the overall `""` and every served service (`vitals.echo.v1.Echo`,
//!   `vitals.metrics.v1.Metrics`) are SERVING only while the daemon serves *and* no check
//!   fails: NOT_SERVING from start until the first sample has been judged, whenever a check
//!   fails, and from SIGTERM on.
//! - **Liveness**: `grpc.health.v1.Health` says only that the process answers: SERVING from
//!   start to exit, so a liveness probe does not restart a device whose disk is full.
//!
//! Watchers subscribe to one channel that carries every status at once.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::watch;

use crate::{config, proto::metrics::Snapshot};

pub use crate::proto::health::health_check_response::ServingStatus;

/// Every status, by service name (`""` is the overall one).
pub type Statuses = Arc<BTreeMap<String, ServingStatus>>;

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Until the first sample has been judged.
    Starting,
    Serving,
    /// SIGTERM came: readiness is NOT_SERVING for `server.shutdown_delay` while the
    /// listeners still accept, so pollers see it; watches stay open.
    Stopping,
    /// Connections got their GOAWAY; watches end.
    Draining,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Every check's verdict on the last sample judged.
    verdicts: Arc<[Verdict]>,
    /// Why checks fail, one line each; empty when all pass.
    failures: Vec<String>,
    /// When the failing checks were last said in the log, and how many evaluations with
    /// the same kinds of failure (numbers aside) came since.
    said: Option<(std::time::Instant, u64)>,
    liveness: Vec<String>,
    readiness: Vec<String>,
}

/// The health state shared by the health service, the checks and the lifecycle.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Mutex<Inner>>,
    tx: Arc<watch::Sender<(Phase, Statuses)>>,
}

impl Health {
    /// Health for these services: the `liveness` ones SERVING from the start, the
    /// `readiness` ones (and `""`) NOT_SERVING until [`Health::set_phase`] says Serving.
    pub fn new(liveness: &[&str], readiness: &[&str]) -> Health {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        let inner = Inner {
            phase: Phase::Starting,
            verdicts: Arc::new([]),
            failures: Vec::new(),
            said: None,
            liveness: names(liveness),
            readiness: names(readiness),
        };
        let statuses = inner.statuses();
        Health {
            inner: Arc::new(Mutex::new(inner)),
            tx: Arc::new(watch::channel((Phase::Starting, statuses)).0),
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.update(|inner| inner.phase = phase);
    }

    /// Replaces the verdicts of the checks. Logs when checks start to fail, when the kind
    /// of failure changes and when they pass again; a failure that only moves its numbers
    /// (a certificate's seconds left, a disk's percent free) is said again at most every
    /// [`REMIND_EVERY`], with how many checks found it since.
    pub fn set_verdicts(&self, verdicts: Vec<Verdict>) {
        let failures: Vec<String> = verdicts.iter().filter_map(|v| v.failure.clone()).collect();
        self.update(|inner| {
            let now = std::time::Instant::now();
            if kinds(&inner.failures) != kinds(&failures) {
                if failures.is_empty() {
                    tracing::info!("health checks pass again");
                    inner.said = None;
                } else {
                    tracing::warn!(reasons = %failures.join("; "), "health checks fail");
                    inner.said = Some((now, 0));
                }
            } else if let Some((at, since)) = &mut inner.said {
                *since += 1;
                if now.duration_since(*at) >= REMIND_EVERY {
                    tracing::warn!(reasons = %failures.join("; "), checks = *since, "health checks still fail");
                    (*at, *since) = (now, 0);
                }
            }
            inner.failures = failures;
            inner.verdicts = verdicts.into();
        });
    }

    fn update(&self, change: impl FnOnce(&mut Inner)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut inner);
        let next = (inner.phase, inner.statuses());
        self.tx.send_if_modified(|current| {
            let modified = *current != next;
            *current = next;
            modified
        });
    }

    /// The status of one service, `None` when it is unknown.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.tx.borrow().1.get(service).copied()
    }

    /// Every status.
    pub fn statuses(&self) -> Statuses {
        self.tx.borrow().1.clone()
    }

    /// Why the overall status is NOT_SERVING, if checks are the reason.
    pub fn failures(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failures
            .clone()
    }

    /// Every check's verdict on the last sample judged (none before the first).
    pub fn verdicts(&self) -> Arc<[Verdict]> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .verdicts
            .clone()
    }

    /// Where the daemon is in its life.
    pub fn phase(&self) -> Phase {
        self.tx.borrow().0
    }

    /// A receiver that sees every change of phase or status.
    pub fn subscribe(&self) -> watch::Receiver<(Phase, Statuses)> {
        self.tx.subscribe()
    }
}

/// How often a failure that stays of the same kind is said again.
const REMIND_EVERY: Duration = Duration::from_secs(600);

/// The kinds of `failures`: each with its numbers left out, so "has 3599s left" and "has
/// 3594s left" are one kind.
fn kinds(failures: &[String]) -> Vec<String> {
    failures
        .iter()
        .map(|f| {
            let mut kind = String::with_capacity(f.len());
            for c in f.chars() {
                if c.is_ascii_digit() || c == '.' {
                    if !kind.ends_with('#') {
                        kind.push('#');
                    }
                } else {
                    kind.push(c);
                }
            }
            kind
        })
        .collect()
}

impl Inner {
    fn statuses(&self) -> Statuses {
        let serving = |ok: bool| {
            if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let ready = self.phase == Phase::Serving && self.failures.is_empty();
        let mut map = BTreeMap::new();
        map.insert(String::new(), serving(ready));
        for service in &self.readiness {
            map.insert(service.clone(), serving(ready));
        }
        for service in &self.liveness {
            map.insert(service.clone(), ServingStatus::Serving);
        }
        Arc::new(map)
    }
}

/// What a snapshot is judged against.
#[derive(Debug, Clone)]
pub struct Checks {
    pub thresholds: config::Health,
    /// When the server certificate expires.
    pub cert_not_after: Option<SystemTime>,
    /// A sample older than this is stale: the sampler is stuck, and nothing it said holds.
    pub stale_after: Duration,
}

/// One check's verdict on a sample: what it checks, on what, and why it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The check, a stable name for metrics and alerts: [`SAMPLE_FRESH`], [`DISK_FREE`],
    /// [`MEMORY_AVAILABLE`], [`TEMPERATURE`] or [`CERTIFICATE_VALIDITY`].
    pub check: &'static str,
    /// What it is applied to: a `health.disk_paths` entry, a sensor's label; empty for the
    /// checks that have one subject.
    pub subject: String,
    /// Why it fails, one line; `None` while it passes.
    pub failure: Option<String>,
}

/// The sampler's last sample is there and younger than [`Checks::stale_after`].
pub const SAMPLE_FRESH: &str = "sample_fresh";
/// A daemon task (subject: its name) has not kept panicking (`crate::supervise`).
pub const TASK: &str = "task";
/// A `health.disk_paths` entry's filesystem answers and has `min_disk_free_percent` free.
pub const DISK_FREE: &str = "disk_free";
/// `min_memory_available_percent` of memory is available.
pub const MEMORY_AVAILABLE: &str = "memory_available";
/// A sensor reads at most `max_temperature_celsius`.
pub const TEMPERATURE: &str = "temperature";
/// The server certificate has `min_cert_validity` left.
pub const CERTIFICATE_VALIDITY: &str = "certificate_validity";

/// A verdict for each task that was ever run again after a panic (`restarts`), failing for
/// the ones in `failing` (a task and why, as `crate::supervise::failing` says).
pub fn tasks(restarts: &[(&'static str, u64)], failing: &[(&'static str, String)]) -> Vec<Verdict> {
    restarts
        .iter()
        .map(|(task, _)| {
            let why = failing
                .iter()
                .find(|(t, _)| t == task)
                .map(|(_, why)| why.clone());
            Verdict::new(TASK, *task, why)
        })
        .collect()
}

impl Verdict {
    fn new(check: &'static str, subject: impl Into<String>, failure: Option<String>) -> Verdict {
        Verdict {
            check,
            subject: subject.into(),
            failure,
        }
    }
}

/// The checks applied to a snapshot at `now`; one line per failing check.
pub fn evaluate(snapshot: &Snapshot, checks: &Checks, now: SystemTime) -> Vec<String> {
    judge(snapshot, checks, now)
        .into_iter()
        .filter_map(|v| v.failure)
        .collect()
}

/// Every check that applies, with its verdict on a snapshot at `now`: the ones configured
/// (a threshold of zero turns its check off), in a stable order. Without a sample only
/// [`SAMPLE_FRESH`] is judged.
pub fn judge(snapshot: &Snapshot, checks: &Checks, now: SystemTime) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    if snapshot.sampled_at_unix_ms == 0 {
        let why = "no metrics sample yet".to_string();
        verdicts.push(Verdict::new(SAMPLE_FRESH, "", Some(why)));
        return verdicts;
    }
    let sampled_at = SystemTime::UNIX_EPOCH + Duration::from_millis(snapshot.sampled_at_unix_ms);
    let age = now.duration_since(sampled_at).unwrap_or_default();
    let stale = (age > checks.stale_after).then(|| {
        format!(
            "stale metrics: the last sample is {}s old (more than {}s)",
            age.as_secs(),
            checks.stale_after.as_secs()
        )
    });
    verdicts.push(Verdict::new(SAMPLE_FRESH, "", stale));
    let thresholds = &checks.thresholds;
    if thresholds.min_disk_free_percent > 0.0 {
        for path in &thresholds.disk_paths {
            // The sampler always reads the mount a watched path is on: none here means it
            // could not be read at all, which is a failure, not a pass.
            let subject = path.display().to_string();
            let Some(fs) = filesystem_of(snapshot, path) else {
                let why = format!(
                    "no filesystem could be read for {}, so its free space cannot be checked",
                    path.display()
                );
                verdicts.push(Verdict::new(DISK_FREE, subject, Some(why)));
                continue;
            };
            if fs.stuck {
                let why = format!(
                    "filesystem {} does not answer (stuck), so {} cannot be checked",
                    fs.mount_point,
                    path.display()
                );
                verdicts.push(Verdict::new(DISK_FREE, subject, Some(why)));
                continue;
            }
            if !fs.error.is_empty() {
                let why = format!(
                    "filesystem {} could not be read ({}), so {} cannot be checked",
                    fs.mount_point,
                    fs.error,
                    path.display()
                );
                verdicts.push(Verdict::new(DISK_FREE, subject, Some(why)));
                continue;
            }
            let free = percent(fs.available_bytes, fs.total_bytes);
            let low = (free < thresholds.min_disk_free_percent).then(|| {
                format!(
                    "filesystem {} has {free:.1}% free, below {}%",
                    fs.mount_point, thresholds.min_disk_free_percent
                )
            });
            verdicts.push(Verdict::new(DISK_FREE, subject, low));
        }
    }
    if let Some(memory) = &snapshot.memory
        && thresholds.min_memory_available_percent > 0.0
        && memory.total_bytes > 0
    {
        let available = percent(memory.available_bytes, memory.total_bytes);
        let low = (available < thresholds.min_memory_available_percent).then(|| {
            format!(
                "memory has {available:.1}% available, below {}%",
                thresholds.min_memory_available_percent
            )
        });
        verdicts.push(Verdict::new(MEMORY_AVAILABLE, "", low));
    }
    if let Some(max) = thresholds.max_temperature_celsius {
        for t in &snapshot.temperatures {
            if let Some(celsius) = t.celsius {
                let hot = (f64::from(celsius) > max)
                    .then(|| format!("{} reads {celsius:.1}°C, above {max}°C", t.label));
                verdicts.push(Verdict::new(TEMPERATURE, t.label.clone(), hot));
            }
        }
    }
    if let Some(not_after) = checks.cert_not_after {
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let short = match not_after.duration_since(now) {
            Err(_) => Some(format!(
                "the server certificate expired (not after {secs} unix time)"
            )),
            Ok(left) if left < thresholds.min_cert_validity => Some(format!(
                "the server certificate has {}s of validity left (not after {secs} unix time), below health.min_cert_validity ({}s)",
                left.as_secs(),
                thresholds.min_cert_validity.as_secs()
            )),
            Ok(_) => None,
        };
        verdicts.push(Verdict::new(CERTIFICATE_VALIDITY, "", short));
    }
    verdicts
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The filesystem a path lives on: the one with the longest mount point that contains it
/// (a stuck or unreadable one included: it hides whatever is below it).
fn filesystem_of<'a>(
    snapshot: &'a Snapshot,
    path: &Path,
) -> Option<&'a crate::proto::metrics::Filesystem> {
    snapshot
        .filesystems
        .iter()
        .filter(|fs| {
            (fs.total_bytes > 0 || fs.stuck || !fs.error.is_empty())
                && path.starts_with(&fs.mount_point)
        })
        .max_by_key(|fs| fs.mount_point.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures that differ only in their numbers are one kind; another check is another.
    #[test]
    fn kinds_leave_numbers_out() {
        let a = vec![
            "the server certificate has 3599s of validity left (not after 17 unix time)"
                .to_string(),
        ];
        let b = vec![
            "the server certificate has 3594s of validity left (not after 17 unix time)"
                .to_string(),
        ];
        let c = vec!["memory has 4.5% available, below 5%".to_string()];
        assert_eq!(kinds(&a), kinds(&b));
        assert_ne!(kinds(&a), kinds(&c));
    }
    use crate::proto::metrics::{Filesystem, Memory, Temperature};

    fn thresholds() -> config::Health {
        config::Health {
            plaintext_listen: vec![],
            plaintext_max_connections: 16,
            disk_paths: vec!["/var/lib/x".into()],
            min_disk_free_percent: 5.0,
            min_memory_available_percent: 10.0,
            max_temperature_celsius: Some(80.0),
            min_cert_validity: Duration::ZERO,
        }
    }

    fn checks(thresholds: config::Health, cert_not_after: Option<SystemTime>) -> Checks {
        Checks {
            thresholds,
            cert_not_after,
            stale_after: Duration::from_secs(15),
        }
    }

    /// A snapshot sampled at `now`.
    fn sampled(now: SystemTime, snapshot: Snapshot) -> Snapshot {
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        Snapshot {
            sampled_at_unix_ms: ms as u64,
            ..snapshot
        }
    }

    fn fs(mount: &str, total: u64, available: u64) -> Filesystem {
        Filesystem {
            mount_point: mount.into(),
            total_bytes: total,
            available_bytes: available,
            ..Default::default()
        }
    }

    /// Readiness names (`""` and served services) need the serving phase and passing
    /// checks; the liveness name is SERVING in every phase and whatever the checks say.
    #[test]
    fn readiness_follows_phase_and_checks_liveness_does_not() {
        let health = Health::new(&["live"], &["svc"]);
        let (ready, serving) = (ServingStatus::NotServing, ServingStatus::Serving);
        let all = |h: &Health| (h.status(""), h.status("svc"), h.status("live"));
        assert_eq!(all(&health), (Some(ready), Some(ready), Some(serving)));
        health.set_phase(Phase::Serving);
        assert_eq!(all(&health), (Some(serving), Some(serving), Some(serving)));
        let hot = Verdict::new(TEMPERATURE, "cpu", Some("hot".into()));
        health.set_verdicts(vec![hot]);
        assert_eq!(all(&health), (Some(ready), Some(ready), Some(serving)));
        health.set_verdicts(vec![]);
        for phase in [Phase::Stopping, Phase::Draining] {
            health.set_phase(phase);
            assert_eq!(all(&health), (Some(ready), Some(ready), Some(serving)));
        }
        assert_eq!(health.status("nope"), None);
    }

    /// Watchers are woken only when something changed.
    #[test]
    fn unchanged_updates_do_not_wake_watchers() {
        let health = Health::new(&[], &[]);
        let mut rx = health.subscribe();
        rx.mark_unchanged();
        health.set_verdicts(vec![]);
        assert!(!rx.has_changed().unwrap());
        health.set_phase(Phase::Serving);
        assert!(rx.has_changed().unwrap());
    }

    /// Each threshold fails on its own, against the filesystem that holds the path.
    #[test]
    fn thresholds_fail_with_reasons() {
        let now = SystemTime::now();
        let snapshot = sampled(
            now,
            Snapshot {
                filesystems: vec![
                    fs("/", 100, 50),
                    fs("/var", 100, 1),
                    fs("/var/lib/x/y", 100, 0),
                ],
                memory: Some(Memory {
                    total_bytes: 100,
                    available_bytes: 5,
                    ..Default::default()
                }),
                temperatures: vec![Temperature {
                    label: "cpu".into(),
                    celsius: Some(91.0),
                    critical_celsius: None,
                }],
                ..Default::default()
            },
        );
        let failures = evaluate(
            &snapshot,
            &checks(thresholds(), Some(now - Duration::from_secs(1))),
            now,
        );
        assert_eq!(failures.len(), 4, "{failures:?}");
        assert!(
            failures[0].starts_with("filesystem /var has 1.0% free"),
            "{failures:?}"
        );
        assert!(failures[1].starts_with("memory has 5.0% available"));
        assert!(failures[2].starts_with("cpu reads 91.0°C"));
        assert!(failures[3].contains("expired"));
    }

    /// Every configured check has a verdict, passing or not, named for metrics: the disk
    /// check once per watched path, the temperature check once per sensor; without a sample
    /// only the freshness check is judged.
    #[test]
    fn verdicts_name_each_check_and_its_subject() {
        let now = SystemTime::now();
        let snapshot = sampled(
            now,
            Snapshot {
                filesystems: vec![fs("/", 100, 50), fs("/var", 100, 1)],
                memory: Some(Memory {
                    total_bytes: 100,
                    available_bytes: 50,
                    ..Default::default()
                }),
                temperatures: vec![Temperature {
                    label: "cpu".into(),
                    celsius: Some(91.0),
                    critical_celsius: None,
                }],
                ..Default::default()
            },
        );
        let thresholds = config::Health {
            disk_paths: vec!["/".into(), "/var/lib/x".into()],
            ..thresholds()
        };
        let later = Some(now + Duration::from_secs(60));
        let verdicts = judge(&snapshot, &checks(thresholds.clone(), later), now);
        let named: Vec<(&str, &str, bool)> = verdicts
            .iter()
            .map(|v| (v.check, v.subject.as_str(), v.failure.is_some()))
            .collect();
        assert_eq!(
            named,
            [
                (SAMPLE_FRESH, "", false),
                (DISK_FREE, "/", false),
                (DISK_FREE, "/var/lib/x", true),
                (MEMORY_AVAILABLE, "", false),
                (TEMPERATURE, "cpu", true),
                (CERTIFICATE_VALIDITY, "", false),
            ]
        );
        let health = Health::new(&[], &[]);
        health.set_verdicts(verdicts);
        assert_eq!(health.verdicts().len(), 6);
        assert_eq!(health.failures().len(), 2);
        let none = judge(&Snapshot::default(), &checks(thresholds, later), now);
        assert_eq!(none.len(), 1);
        assert_eq!(
            (none[0].check, none[0].failure.as_deref()),
            (SAMPLE_FRESH, Some("no metrics sample yet"))
        );
    }

    /// Below health.min_cert_validity the certificate check fails and says how much is
    /// left; above it, it passes.
    #[test]
    fn certificate_below_min_validity_fails() {
        let now = SystemTime::now();
        let snapshot = sampled(
            now,
            Snapshot {
                filesystems: vec![fs("/", 100, 50)],
                ..Default::default()
            },
        );
        let thresholds = config::Health {
            min_cert_validity: Duration::from_secs(30),
            ..thresholds()
        };
        let soon = Some(now + Duration::from_secs(20));
        let failures = evaluate(&snapshot, &checks(thresholds.clone(), soon), now);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("has 19s of validity left")
                || failures[0].contains("has 20s of validity left"),
            "{failures:?}"
        );
        assert!(
            failures[0].contains("health.min_cert_validity (30s)"),
            "{failures:?}"
        );
        let later = Some(now + Duration::from_secs(40));
        assert!(evaluate(&snapshot, &checks(thresholds, later), now).is_empty());
    }

    /// A healthy snapshot passes, and zero thresholds turn checks off.
    #[test]
    fn healthy_or_disabled_passes() {
        let now = SystemTime::now();
        let snapshot = sampled(
            now,
            Snapshot {
                filesystems: vec![fs("/", 100, 50)],
                memory: Some(Memory {
                    total_bytes: 100,
                    available_bytes: 50,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let later = Some(now + Duration::from_secs(60));
        assert!(evaluate(&snapshot, &checks(thresholds(), later), now).is_empty());
        let off = config::Health {
            min_disk_free_percent: 0.0,
            min_memory_available_percent: 0.0,
            max_temperature_celsius: None,
            min_cert_validity: Duration::ZERO,
            ..thresholds()
        };
        let bad = sampled(
            now,
            Snapshot {
                filesystems: vec![fs("/", 100, 0)],
                ..Default::default()
            },
        );
        assert!(evaluate(&bad, &checks(off, later), now).is_empty());
    }

    /// No sample yet, and a sample older than the stale bound, fail; so does a stuck mount
    /// that holds a watched path, while one elsewhere does not.
    #[test]
    fn missing_stale_and_stuck_samples_fail() {
        let now = SystemTime::now();
        let none = evaluate(&Snapshot::default(), &checks(thresholds(), None), now);
        assert_eq!(none, ["no metrics sample yet"]);
        let old = sampled(
            now - Duration::from_secs(20),
            Snapshot {
                filesystems: vec![fs("/", 100, 50)],
                ..Default::default()
            },
        );
        let stale = evaluate(&old, &checks(thresholds(), None), now);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(
            stale[0].starts_with("stale metrics: the last sample is 20s old"),
            "{stale:?}"
        );
        let stuck = |mount: &str| Filesystem {
            mount_point: mount.into(),
            stuck: true,
            ..Default::default()
        };
        let snapshot = sampled(
            now,
            Snapshot {
                filesystems: vec![fs("/", 100, 50), stuck("/var/lib"), stuck("/mnt/nfs")],
                ..Default::default()
            },
        );
        let failures = evaluate(&snapshot, &checks(thresholds(), None), now);
        assert_eq!(
            failures,
            ["filesystem /var/lib does not answer (stuck), so /var/lib/x cannot be checked"]
        );
    }

    /// A watched path whose filesystem is missing from the sample (it could not be read)
    /// fails, and so does one on a filesystem whose read failed; the reason says which.
    #[test]
    fn unreadable_watched_paths_fail() {
        let now = SystemTime::now();
        let t = config::Health {
            disk_paths: vec!["/data/x".into()],
            ..thresholds()
        };
        let missing = sampled(
            now,
            Snapshot {
                filesystems: vec![fs("/srv", 100, 50)],
                ..Default::default()
            },
        );
        let failures = evaluate(&missing, &checks(t.clone(), None), now);
        assert_eq!(
            failures,
            ["no filesystem could be read for /data/x, so its free space cannot be checked"]
        );
        let failed = sampled(
            now,
            Snapshot {
                filesystems: vec![
                    fs("/", 100, 50),
                    Filesystem {
                        mount_point: "/data".into(),
                        error: "Permission denied (os error 13)".into(),
                        ..Filesystem::default()
                    },
                ],
                ..Default::default()
            },
        );
        let failures = evaluate(&failed, &checks(t, None), now);
        assert_eq!(
            failures,
            [
                "filesystem /data could not be read (Permission denied (os error 13)), so /data/x cannot be checked"
            ]
        );
    }
}

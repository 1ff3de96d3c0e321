//! Health status: what grpc.health.v1 reports, derived from the daemon's lifecycle and from
//! real checks (free disk, available memory, temperature, server certificate expiry).
//!
//! Every service named here is SERVING while the daemon serves, and NOT_SERVING while it
//! starts and drains. The overall status `""` is SERVING only when the daemon serves *and*
//! no check fails. Watchers subscribe to one channel that carries every status at once.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use tokio::sync::watch;

use crate::{config, proto::metrics::Snapshot};

pub use crate::proto::health::health_check_response::ServingStatus;

/// Every status, by service name (`""` is the overall one).
pub type Statuses = Arc<BTreeMap<String, ServingStatus>>;

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Serving,
    Draining,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Why checks fail, one line each; empty when all pass.
    failures: Vec<String>,
    services: Vec<String>,
}

/// The health state shared by the health service, the checks and the lifecycle.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Mutex<Inner>>,
    tx: Arc<watch::Sender<(Phase, Statuses)>>,
}

impl Health {
    /// Health for these services, all NOT_SERVING until [`Health::set_phase`] says Serving.
    pub fn new(services: &[&str]) -> Health {
        let inner = Inner {
            phase: Phase::Starting,
            failures: Vec::new(),
            services: services.iter().map(|s| s.to_string()).collect(),
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

    /// Replaces the failing checks; logs when the overall status changes because of them.
    pub fn set_failures(&self, failures: Vec<String>) {
        self.update(|inner| {
            if inner.failures != failures {
                if failures.is_empty() {
                    tracing::info!("health checks pass again");
                } else {
                    tracing::warn!(reasons = %failures.join("; "), "health checks fail");
                }
            }
            inner.failures = failures;
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

    /// A receiver that sees every change of phase or status.
    pub fn subscribe(&self) -> watch::Receiver<(Phase, Statuses)> {
        self.tx.subscribe()
    }
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
        let up = self.phase == Phase::Serving;
        let mut map = BTreeMap::new();
        map.insert(String::new(), serving(up && self.failures.is_empty()));
        for service in &self.services {
            map.insert(service.clone(), serving(up));
        }
        Arc::new(map)
    }
}

/// The thresholds of [`config::Health`] applied to a snapshot; one line per failing check.
pub fn evaluate(
    snapshot: &Snapshot,
    thresholds: &config::Health,
    cert_not_after: Option<SystemTime>,
    now: SystemTime,
) -> Vec<String> {
    let mut failures = Vec::new();
    if thresholds.min_disk_free_percent > 0.0 {
        for path in &thresholds.disk_paths {
            let Some(fs) = filesystem_of(snapshot, path) else {
                continue;
            };
            let free = percent(fs.available_bytes, fs.total_bytes);
            if free < thresholds.min_disk_free_percent {
                failures.push(format!(
                    "filesystem {} has {free:.1}% free, below {}%",
                    fs.mount_point, thresholds.min_disk_free_percent
                ));
            }
        }
    }
    if let Some(memory) = &snapshot.memory
        && thresholds.min_memory_available_percent > 0.0
        && memory.total_bytes > 0
    {
        let available = percent(memory.available_bytes, memory.total_bytes);
        if available < thresholds.min_memory_available_percent {
            failures.push(format!(
                "memory has {available:.1}% available, below {}%",
                thresholds.min_memory_available_percent
            ));
        }
    }
    if let Some(max) = thresholds.max_temperature_celsius {
        for t in &snapshot.temperatures {
            if let Some(celsius) = t.celsius
                && f64::from(celsius) > max
            {
                failures.push(format!("{} reads {celsius:.1}°C, above {max}°C", t.label));
            }
        }
    }
    if let Some(not_after) = cert_not_after
        && now > not_after
    {
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        failures.push(format!(
            "the server certificate expired (not after {secs} unix time)"
        ));
    }
    failures
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The filesystem a path lives on: the one with the longest mount point that contains it.
fn filesystem_of<'a>(
    snapshot: &'a Snapshot,
    path: &Path,
) -> Option<&'a crate::proto::metrics::Filesystem> {
    snapshot
        .filesystems
        .iter()
        .filter(|fs| fs.total_bytes > 0 && path.starts_with(&fs.mount_point))
        .max_by_key(|fs| fs.mount_point.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metrics::{Filesystem, Memory, Temperature};
    use std::time::Duration;

    fn thresholds() -> config::Health {
        config::Health {
            plaintext_listen: vec![],
            plaintext_max_connections: 16,
            disk_paths: vec!["/var/lib/x".into()],
            min_disk_free_percent: 5.0,
            min_memory_available_percent: 10.0,
            max_temperature_celsius: Some(80.0),
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

    /// Overall status needs the serving phase and passing checks; services only the phase.
    #[test]
    fn overall_follows_phase_and_checks() {
        let health = Health::new(&["svc"]);
        assert_eq!(health.status(""), Some(ServingStatus::NotServing));
        health.set_phase(Phase::Serving);
        assert_eq!(health.status(""), Some(ServingStatus::Serving));
        health.set_failures(vec!["hot".into()]);
        assert_eq!(health.status(""), Some(ServingStatus::NotServing));
        assert_eq!(health.status("svc"), Some(ServingStatus::Serving));
        health.set_failures(vec![]);
        health.set_phase(Phase::Draining);
        assert_eq!(health.status("svc"), Some(ServingStatus::NotServing));
        assert_eq!(health.status("nope"), None);
    }

    /// Watchers are woken only when something changed.
    #[test]
    fn unchanged_updates_do_not_wake_watchers() {
        let health = Health::new(&[]);
        let mut rx = health.subscribe();
        rx.mark_unchanged();
        health.set_failures(vec![]);
        assert!(!rx.has_changed().unwrap());
        health.set_phase(Phase::Serving);
        assert!(rx.has_changed().unwrap());
    }

    /// Each threshold fails on its own, against the filesystem that holds the path.
    #[test]
    fn thresholds_fail_with_reasons() {
        let now = SystemTime::now();
        let snapshot = Snapshot {
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
        };
        let failures = evaluate(
            &snapshot,
            &thresholds(),
            Some(now - Duration::from_secs(1)),
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

    /// A healthy snapshot passes, and zero thresholds turn checks off.
    #[test]
    fn healthy_or_disabled_passes() {
        let now = SystemTime::now();
        let snapshot = Snapshot {
            filesystems: vec![fs("/", 100, 50)],
            memory: Some(Memory {
                total_bytes: 100,
                available_bytes: 50,
                ..Default::default()
            }),
            ..Default::default()
        };
        let later = Some(now + Duration::from_secs(60));
        assert!(evaluate(&snapshot, &thresholds(), later, now).is_empty());
        let off = config::Health {
            min_disk_free_percent: 0.0,
            min_memory_available_percent: 0.0,
            max_temperature_celsius: None,
            ..thresholds()
        };
        let bad = Snapshot {
            filesystems: vec![fs("/", 100, 0)],
            ..Default::default()
        };
        assert!(evaluate(&bad, &off, later, now).is_empty());
    }
}

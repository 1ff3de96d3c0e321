//! The server certificate's life under `[tls.issue]`: issued at start when there is none
//! (or too little validity is left), renewed by a task before it expires, rotated on
//! request.
//!
//! - The key and chain live in one file in the state directory (`issued.pem`, mode 0600),
//!   replaced by a rename: a crash leaves the old pair or the new, never a key beside a
//!   certificate it does not match. A restart reads it and issues nothing while enough
//!   validity is left.
//! - Renewal is due when less than `renew_before` (default: a third of the lifetime) is
//!   left, brought forward by a random part of `jitter` so a fleet spreads its requests.
//! - A failed renewal keeps the current certificate served and is retried with
//!   exponential backoff (1 s doubling, at most a tenth of the validity left, within
//!   1 s..5 min); each outcome is counted for the metrics.
//! - A renewal hands the new file to the daemon as [`Control::Identity`], which swaps it
//!   in for new handshakes exactly as a reload does.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::Control;
use crate::{
    config::{Config, Issue},
    secrets::{
        Secrets,
        issue::{self, Current, Issued},
    },
    series::IssueStats,
    service::admin::{RotateAsk, Rotated},
};

/// Why startup could not get a usable certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable server certificate in {} and none could be issued: {source}", file.display())]
    Pki {
        file: PathBuf,
        #[source]
        source: issue::Error,
    },
    #[error("writing the issued certificate to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The certificate in the state directory, as far as renewal cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No file, or one that is not a key and a certificate (it is replaced).
    Missing(String),
    Held {
        not_before: SystemTime,
        not_after: SystemTime,
    },
}

impl State {
    fn read(file: &Path) -> State {
        let certs = match crate::tls::load_certs(file) {
            Ok(certs) => certs,
            Err(e) => return State::Missing(crate::error::chain(&e)),
        };
        if let Err(e) = crate::tls::load_key(file) {
            return State::Missing(crate::error::chain(&e));
        }
        match (
            crate::x509::not_before(&certs[0]),
            crate::x509::not_after(&certs[0]),
        ) {
            (Some(not_before), Some(not_after)) => State::Held {
                not_before,
                not_after,
            },
            _ => State::Missing(format!(
                "{}: the certificate's validity does not parse",
                file.display()
            )),
        }
    }

    /// How the pki login sees it at `now`.
    fn current(&self, now: SystemTime) -> Current {
        match *self {
            State::Missing(_) => Current::Missing,
            State::Held { not_after, .. } if now >= not_after => Current::Expired { not_after },
            State::Held { .. } => Current::Valid,
        }
    }
}

/// How long before notAfter renewal is due: `renew_before`, or a third of the lifetime.
fn window(issue: &Issue, not_before: SystemTime, not_after: SystemTime) -> Duration {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    issue.renew_before.unwrap_or(lifetime / 3).min(lifetime)
}

/// When a renewal is due for this certificate, `jitter` taken off at random (never before
/// notBefore).
fn due(issue: &Issue, not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let window = window(issue, not_before, not_after);
    let at = not_after - window;
    let jitter = issue.jitter.unwrap_or(window / 10);
    let early = jitter.mul_f64(fastrand::f64());
    at.checked_sub(early)
        .map_or(not_before, |t| t.max(not_before))
}

/// At start, before the TLS identity is built: issues a certificate when there is none or
/// less than the renewal window is left. Without a usable certificate, startup waits for
/// the pki up to `secrets.startup_timeout`; with one, a single try, and the renewal task
/// keeps trying. Returns when a certificate was issued, for the metrics.
pub async fn ensure(
    config: &Config,
    secrets: &Secrets,
    progress: crate::secrets::Progress<'_>,
) -> Result<Option<SystemTime>, Error> {
    let Some(issue) = &config.tls.issue else {
        return Ok(None);
    };
    let file = issue.file();
    let state = State::read(&file);
    let now = SystemTime::now();
    let current = state.current(now);
    match &state {
        State::Held {
            not_before,
            not_after,
        } if now + window(issue, *not_before, *not_after) < *not_after => {
            tracing::info!(
                file = %file.display(),
                not_after = unix(*not_after),
                "serving the issued certificate in the state directory; it is not due for renewal"
            );
            return Ok(None);
        }
        State::Missing(reason) => {
            tracing::info!(file = %file.display(), reason = %reason, "no issued certificate yet: asking the pki for one")
        }
        State::Held { .. } => {
            tracing::info!(file = %file.display(), "the issued certificate is due for renewal: asking the pki")
        }
    }
    let usable = current == Current::Valid;
    let deadline = if usable {
        Instant::now()
    } else {
        Instant::now() + config.secrets.startup_timeout
    };
    match issue::issue(issue, secrets, current, deadline, progress).await {
        Ok(issued) => {
            let file = write(issue, issued)?;
            tracing::info!(serial = %file.serial, not_after = unix(file.not_after), "the pki issued a certificate");
            Ok(Some(SystemTime::now()))
        }
        Err(source) if usable => {
            tracing::warn!(reason = %source, "could not renew the certificate at start; serving the current one, and the renewal task keeps trying");
            Ok(None)
        }
        Err(source) => Err(Error::Pki { file, source }),
    }
}

/// Writes `issued` to the state directory in one rename. A few KiB once per renewal, so
/// it is written in place: a blocking task's code would cost more binary than the write
/// costs time (docs/arm.md).
fn write(issue: &Issue, issued: Issued) -> Result<Rotated, Error> {
    let file = issue.file();
    replace(&issue.state_dir, &file, issued.pem.as_bytes())
        .map_err(|source| Error::Write { path: file, source })?;
    Ok(Rotated {
        serial: issued.serial,
        not_after: issued.not_after,
    })
}

/// Replaces `file` in `dir` with `bytes` (mode 0600): a temporary file written and synced,
/// then renamed over it, then the directory synced, so a crash leaves one whole version.
fn replace(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let temp = dir.join(".issued.pem.tmp");
    let _ = std::fs::remove_file(&temp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&temp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

/// What the renewal task runs on.
pub struct Renewal {
    pub issue: Box<Issue>,
    /// The login secrets as the last reload pulled them.
    pub secrets: watch::Receiver<Secrets>,
    pub control: mpsc::Sender<Control>,
    pub stats: Arc<crate::series::DaemonStats>,
    pub asks: mpsc::Receiver<RotateAsk>,
    pub stop: CancellationToken,
}

/// Renews when due and when asked, until `stop`.
pub async fn run(r: &mut Renewal) {
    let stats = &r.stats.issue;
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    loop {
        // A few KiB from the state directory, read in place (as `write` writes).
        let state = State::read(&r.issue.file());
        let wait = match (retry_at, &state) {
            (Some(at), _) => at.saturating_duration_since(Instant::now()),
            (None, State::Missing(_)) => Duration::ZERO,
            (
                None,
                State::Held {
                    not_before,
                    not_after,
                },
            ) => due(&r.issue, *not_before, *not_after)
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        };
        let asked = tokio::select! {
            _ = r.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => None,
            ask = r.asks.recv() => match ask {
                Some(ask) => Some(ask),
                None => return,
            },
        };
        let why = if asked.is_some() { "rotate" } else { "renewal" };
        let current = state.current(SystemTime::now());
        let progress = |_: &str| {};
        let secrets = r.secrets.borrow().clone();
        // One attempt: this loop owns the backoff, and keeps answering rotates meanwhile.
        let outcome =
            match issue::issue(&r.issue, &secrets, current, Instant::now(), &progress).await {
                Ok(issued) => write(&r.issue, issued).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        match &outcome {
            Ok(rotated) => {
                failures = 0;
                retry_at = None;
                stats.last_ok.store(1, Relaxed);
                stats.last_success.store(unix(SystemTime::now()), Relaxed);
                tracing::info!(why, serial = %rotated.serial, not_after = unix(rotated.not_after), "the pki issued a new certificate; serving it on new connections");
                let _ = r.control.send(Control::Identity { why: "renewed" }).await;
            }
            Err(reason) => {
                failures += 1;
                stats.last_ok.store(0, Relaxed);
                stats.failures.fetch_add(1, Relaxed);
                let delay = backoff(failures, &state);
                retry_at = Some(Instant::now() + delay);
                let not_after = match state {
                    State::Held { not_after, .. } => unix(not_after),
                    State::Missing(_) => 0,
                };
                tracing::warn!(why, reason = %reason, attempt = failures, retry_in_ms = delay.as_millis() as u64, not_after, "certificate renewal failed; still serving the current certificate");
            }
        }
        if let Some(ask) = asked {
            let _ = ask.reply.send(outcome);
        }
    }
}

/// The wait after the `failures`th failure in a row: 1 s doubling, with jitter, capped at a
/// tenth of the validity left (within 1 s..5 min), so a certificate close to its end is
/// retried often.
fn backoff(failures: u32, state: &State) -> Duration {
    let left = match state {
        State::Held { not_after, .. } => not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
        State::Missing(_) => Duration::ZERO,
    };
    let cap = (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(300));
    let bound = Duration::from_secs(1)
        .saturating_mul(1 << failures.min(16))
        .min(cap);
    // Half fixed, half random: never a burst of immediate retries.
    bound / 2 + (bound / 2).mul_f64(fastrand::f64())
}

/// Marks renewal as configured in the metrics; `issued_at` is a certificate issued at start.
pub fn enable(stats: &IssueStats, issued_at: Option<SystemTime>) {
    stats.enabled.store(1, Relaxed);
    stats.last_ok.store(1, Relaxed);
    if let Some(at) = issued_at {
        stats.last_success.store(unix(at), Relaxed);
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(renew_before: Option<u64>, jitter: Option<u64>) -> Issue {
        let text = "[tls.issue]\naddr = \"https://bao:8200\"\nca_cert = \"/ca.pem\"\nrole = \"r\"\ncommon_name = \"d\"\nauth = \"cert\"\nstate_dir = \"/var/lib/vitals\"\n";
        let mut issue = *crate::config::Config::parse("t", text)
            .unwrap()
            .tls
            .issue
            .unwrap();
        issue.renew_before = renew_before.map(Duration::from_secs);
        issue.jitter = jitter.map(Duration::from_secs);
        issue
    }

    /// Renewal is due a third of the lifetime before notAfter by default, at
    /// `renew_before` when set, and jitter only brings it forward.
    #[test]
    fn renewal_is_due_in_the_window() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(90);
        assert_eq!(
            due(&issue(None, Some(0)), start, end),
            start + Duration::from_secs(60)
        );
        assert_eq!(
            due(&issue(Some(40), Some(0)), start, end),
            start + Duration::from_secs(50)
        );
        for _ in 0..100 {
            let at = due(&issue(Some(40), Some(10)), start, end);
            assert!(at >= start + Duration::from_secs(40) && at <= start + Duration::from_secs(50));
        }
        // A window longer than the lifetime is due at once.
        assert_eq!(due(&issue(Some(900), Some(0)), start, end), start);
    }

    /// The backoff doubles from about a second and stays under a tenth of what is left.
    #[test]
    fn backoff_is_bounded() {
        let held = State::Held {
            not_before: SystemTime::now(),
            not_after: SystemTime::now() + Duration::from_secs(100),
        };
        assert!(backoff(1, &held) <= Duration::from_secs(2));
        assert!(backoff(30, &held) <= Duration::from_secs(10));
        assert!(backoff(30, &State::Missing(String::new())) <= Duration::from_secs(1));
    }

    /// The state file is replaced whole, with mode 0600.
    #[test]
    fn state_file_is_replaced_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let file = state.join("issued.pem");
        replace(&state, &file, b"one").unwrap();
        replace(&state, &file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!state.join(".issued.pem.tmp").exists());
    }
}

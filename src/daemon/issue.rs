//! The server certificate's life under `[tls.issue]`: issued at start when there is none
//! (or too little validity is left, or it is not what the config asks for), renewed by a
//! task before it expires, rotated on request.
//!
//! - The key and chain live in one file in the state directory (`issued.pem`, mode 0600),
//!   replaced by a rename: a crash leaves the old pair or the new, never a key beside a
//!   certificate it does not match. A restart reads it and issues nothing while enough
//!   validity is left.
//! - Nothing the engine answers is written or served unchecked ([`crate::secrets::verify`]):
//!   a certificate for another key, with other names, expired, too short-lived or not
//!   chaining to `tls.issue.issuer_ca` is refused, the current one stays, and the retry
//!   backs off. At start, a state file that does not verify is set aside
//!   (`issued.pem.rejected-<unix time>`, renamed, not deleted) and a new one asked for.
//! - A held certificate whose names or key type the config no longer asks for (a restart or
//!   a reload changed them) is renewed at once; until the new one comes, it is served.
//! - Renewal is due when less than `renew_before` (default: a third of the lifetime, counted
//!   from when the device got the certificate, not from the engine's back-dated notBefore)
//!   is left, brought forward by a random part of `jitter` so a fleet spreads its requests.
//! - A failed renewal keeps the current certificate served and is retried with exponential
//!   backoff (1 s doubling; an unreachable engine at most a tenth of the validity left,
//!   within 1 s..5 min; an engine that refused, or answered with a bad certificate, up to
//!   5 min); each outcome is counted for the metrics. The failures are logged when they
//!   start, when their kind changes and when renewal works again, and in between once per
//!   [`FAILURE_PACE`] with the count of those not said.
//! - A renewal hands the new file to the daemon as [`Control::Identity`], which swaps it
//!   in for new handshakes exactly as a reload does (the file watcher leaves the state file
//!   to this task, so the identity is rebuilt once per renewal).

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

use super::{Control, Running};
use crate::{
    config::{Config, Issue},
    secrets::{
        Secrets,
        issue::{self, Current, Issued},
        verify::{self, Problem},
    },
    series::IssueStats,
    service::admin::{RotateAsk, Rotated},
    throttle::Throttle,
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
    /// The CAs issued certificates must chain to cannot be read: a config problem, which
    /// no certificate would get past (and the one held must not be set aside for it).
    #[error("tls.issue.issuer_ca: {0}")]
    Trust(#[source] crate::tls::Error),
}

/// A repeated renewal failure is logged at most this often (besides its start, a change of
/// kind and its end), with how many were not.
pub const FAILURE_PACE: Duration = Duration::from_secs(300);

/// The certificate in the state directory, as checked against `[tls.issue]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No file.
    Missing,
    /// A file that is not a usable key and certificate of ours: it does not parse, its key
    /// is another, or it does not chain to `tls.issue.issuer_ca`.
    Unusable(String),
    Held(Held),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    not_before: SystemTime,
    not_after: SystemTime,
    /// When the device got it (the file was written then): its lifetime counts from here.
    issued_at: SystemTime,
    /// What the config asks for that it is not (names, key type): a new one is due now.
    stale: Option<String>,
}

impl State {
    /// Reads and checks the state file against `issue`. A few KiB from the state
    /// directory, read in place (as `write` writes).
    fn read(issue: &Issue, now: SystemTime) -> State {
        let file = issue.file();
        let unusable = |reason: String| State::Unusable(format!("{}: {reason}", file.display()));
        let written = match std::fs::metadata(&file) {
            Ok(meta) => meta.modified().unwrap_or(now),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return State::Missing,
            Err(e) => return unusable(e.to_string()),
        };
        let certs = match crate::tls::load_certs(&file) {
            Ok(certs) => certs,
            Err(e) => return State::Unusable(crate::error::chain(&e)),
        };
        let key = match crate::tls::load_key(&file) {
            Ok(key) => key,
            Err(e) => return State::Unusable(crate::error::chain(&e)),
        };
        let Some(spki) = verify::key_spki(&key) else {
            return unusable("the private key is not one TLS can use".into());
        };
        let (Some(not_before), Some(not_after)) = (
            crate::x509::not_before(&certs[0]),
            crate::x509::not_after(&certs[0]),
        ) else {
            return unusable("the certificate's validity does not parse".into());
        };
        // Time is for renewal to judge: the chain is checked as of a moment the
        // certificate is valid, so an expired one is renewed, not set aside.
        let last = not_after
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(not_after)
            .max(not_before);
        let at = now.max(not_before).min(last);
        let stale = match verify::check(issue, &certs, &spki, at) {
            Ok(_) => None,
            Err(Problem::Stale(why)) => Some(why),
            Err(Problem::Invalid(why)) => return unusable(why),
        };
        State::Held(Held {
            not_before,
            not_after,
            issued_at: written
                .max(not_before)
                .min(now.min(not_after).max(not_before)),
            stale,
        })
    }

    /// How the pki login sees it at `now`.
    fn current(&self, now: SystemTime) -> Current {
        match self {
            State::Missing | State::Unusable(_) => Current::Missing,
            State::Held(held) if now >= held.not_after => Current::Expired {
                not_after: held.not_after,
            },
            State::Held(_) => Current::Valid,
        }
    }

    fn not_after(&self) -> u64 {
        match self {
            State::Held(held) => unix(held.not_after),
            State::Missing | State::Unusable(_) => 0,
        }
    }
}

/// When a renewal is due for this certificate, `jitter` taken off at random (never before
/// it was issued).
fn due(issue: &Issue, held: &Held) -> SystemTime {
    let window = verify::renew_window(issue, held.issued_at, held.not_after);
    let at = held.not_after - window;
    let jitter = issue.jitter.unwrap_or(window / 10);
    let early = jitter.mul_f64(fastrand::f64());
    at.checked_sub(early)
        .map_or(held.issued_at, |t| t.max(held.issued_at))
}

/// At start, before the TLS identity is built: issues a certificate when there is none,
/// less than the renewal window is left, or it is not what the config asks for. A state
/// file that does not verify is set aside first. Without a usable certificate, startup
/// waits for the pki up to `secrets.startup_timeout` (a bad certificate from it is asked
/// again with backoff); with one, a single try, and the renewal task keeps trying. Returns
/// when a certificate was issued, for the metrics.
pub async fn ensure(
    config: &Config,
    secrets: &Secrets,
    progress: crate::secrets::Progress<'_>,
) -> Result<Option<SystemTime>, Error> {
    let Some(issue) = &config.tls.issue else {
        return Ok(None);
    };
    let file = issue.file();
    crate::tls::load_certs(&issue.issuer_ca).map_err(Error::Trust)?;
    let now = SystemTime::now();
    let state = match State::read(issue, now) {
        State::Unusable(reason) => {
            match set_aside(&file, now) {
                Ok(aside) => tracing::warn!(
                    file = %file.display(),
                    set_aside_as = %aside.display(),
                    reason = %reason,
                    "the issued certificate in the state directory does not verify: set aside, asking the pki for a new one"
                ),
                Err(e) => tracing::warn!(
                    file = %file.display(),
                    reason = %reason,
                    error = %e,
                    "the issued certificate in the state directory does not verify and could not be set aside: asking the pki for a new one, which will replace it"
                ),
            }
            State::Missing
        }
        state => state,
    };
    match &state {
        State::Held(held)
            if held.stale.is_none()
                && now + verify::renew_window(issue, held.issued_at, held.not_after)
                    < held.not_after =>
        {
            tracing::info!(
                file = %file.display(),
                not_after = unix(held.not_after),
                renew_at = unix(due(issue, held)),
                "serving the issued certificate in the state directory; it is not due for renewal"
            );
            return Ok(None);
        }
        State::Held(Held {
            stale: Some(why), ..
        }) => {
            tracing::info!(file = %file.display(), reason = %why, "the issued certificate is not what [tls.issue] asks for now: asking the pki for a new one")
        }
        State::Held(_) => {
            tracing::info!(file = %file.display(), "the issued certificate is due for renewal: asking the pki")
        }
        State::Missing | State::Unusable(_) => {
            tracing::info!(file = %file.display(), "no issued certificate yet: asking the pki for one")
        }
    }
    let current = state.current(now);
    let usable = current == Current::Valid;
    let deadline = if usable {
        Instant::now()
    } else {
        Instant::now() + config.secrets.startup_timeout
    };
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match issue::issue(issue, secrets, current, deadline, progress).await {
            Ok(issued) => {
                let file = write(issue, issued)?;
                tracing::info!(serial = %file.serial, not_after = unix(file.not_after), "the pki issued a certificate");
                return Ok(Some(SystemTime::now()));
            }
            Err(source) if usable => {
                tracing::warn!(reason = %source, "could not renew the certificate at start; serving the current one, and the renewal task keeps trying");
                return Ok(None);
            }
            // A bad certificate may be followed by a good one: asked again with backoff
            // while startup may wait.
            Err(source @ issue::Error::Invalid { .. }) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Pki { file, source });
                }
                let wait = backoff(attempts, "bad certificate", &state).min(left);
                progress(&format!(
                    "waiting for a certificate: {source}; attempt {attempts}, next in {}ms, {}s left",
                    wait.as_millis(),
                    left.as_secs()
                ));
                tokio::time::sleep(wait).await;
            }
            Err(source) => return Err(Error::Pki { file, source }),
        }
    }
}

/// Renames a state file that does not verify out of the way (kept for a look, never
/// deleted): `issued.pem.rejected-<unix time>` beside it.
fn set_aside(file: &Path, now: SystemTime) -> std::io::Result<PathBuf> {
    let mut aside = file.as_os_str().to_owned();
    aside.push(format!(".rejected-{}", unix(now)));
    let aside = PathBuf::from(aside);
    std::fs::rename(file, &aside)?;
    Ok(aside)
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
    /// The running config (its `[tls.issue]`) and the login secrets, as the last reload or
    /// refresh left them.
    pub running: watch::Receiver<Arc<Running>>,
    pub control: mpsc::Sender<Control>,
    pub stats: Arc<crate::series::DaemonStats>,
    pub asks: mpsc::Receiver<RotateAsk>,
    pub stop: CancellationToken,
}

/// Why an attempt failed: the pki's answer, or the state file not written.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("{0}")]
    Issue(#[from] issue::Error),
    #[error("{0}")]
    Write(#[from] Error),
}

impl Failed {
    fn kind(&self) -> &'static str {
        match self {
            Failed::Issue(e) => e.kind(),
            Failed::Write(_) => "write failed",
        }
    }
}

/// The lines about renewal failing: the first of a run, each change of kind, and one per
/// [`FAILURE_PACE`] in between (with the count of those not said); then one when it works
/// again.
struct FailureLog {
    /// The kind of the failures in a row, and how many.
    kind: Option<&'static str>,
    in_a_row: u32,
    pace: Throttle,
}

impl FailureLog {
    fn new() -> FailureLog {
        FailureLog {
            kind: None,
            in_a_row: 0,
            pace: Throttle::every(FAILURE_PACE),
        }
    }

    fn failed(&mut self, why: &str, failed: &Failed, retry_in: Duration, not_after: u64) {
        self.in_a_row += 1;
        let kind = failed.kind();
        let change = match self.kind.replace(kind) {
            None => "started",
            Some(before) if before != kind => "kind changed",
            Some(_) => "continuing",
        };
        let suppressed = if change == "continuing" {
            match self.pace.allow(kind) {
                Some(held) => held.total(),
                None => return,
            }
        } else {
            self.pace = Throttle::every(FAILURE_PACE);
            self.pace.allow(kind);
            0
        };
        tracing::warn!(
            why,
            kind,
            change,
            reason = %failed,
            attempt = self.in_a_row,
            suppressed,
            retry_in_ms = retry_in.as_millis() as u64,
            not_after,
            "certificate renewal failed; still serving the current certificate"
        );
    }

    fn worked(&mut self) {
        if let Some(kind) = self.kind.take() {
            tracing::info!(
                failed_attempts = self.in_a_row,
                last_kind = kind,
                "certificate renewal works again"
            );
        }
        self.in_a_row = 0;
    }
}

/// Renews when due, when asked, and when a reload changes what the certificate must be,
/// until `stop`.
pub async fn run(r: &mut Renewal) {
    let stats = &r.stats.issue;
    let mut log = FailureLog::new();
    let mut retry_at: Option<Instant> = None;
    loop {
        let (issue, secrets) = {
            let running = r.running.borrow_and_update();
            (running.config.tls.issue.clone(), running.secrets.clone())
        };
        // Whether there is a [tls.issue] only changes with a restart.
        let Some(issue) = issue else { return };
        let state = State::read(&issue, SystemTime::now());
        let wait = match (retry_at, &state) {
            (Some(at), _) => at.saturating_duration_since(Instant::now()),
            (None, State::Missing | State::Unusable(_)) => Duration::ZERO,
            (None, State::Held(held)) if held.stale.is_some() => Duration::ZERO,
            (None, State::Held(held)) => due(&issue, held)
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
            changed = r.running.changed() => {
                if changed.is_err() {
                    return;
                }
                // New settings are tried at once if they make the certificate stale.
                if r.running.borrow().config.tls.issue != Some(issue) {
                    retry_at = None;
                }
                continue;
            }
        };
        let why = match (&asked, &state) {
            (Some(_), _) => "rotate",
            (None, State::Missing) => "no certificate",
            (None, State::Unusable(_)) => "certificate does not verify",
            (None, State::Held(held)) if held.stale.is_some() => "config changed",
            (None, State::Held(_)) => "renewal",
        };
        if log.kind.is_none() {
            match &state {
                State::Unusable(reason)
                | State::Held(Held {
                    stale: Some(reason),
                    ..
                }) if asked.is_none() => {
                    tracing::info!(why, reason = %reason, "the issued certificate is not what [tls.issue] asks for: asking the pki for a new one");
                }
                _ => {}
            }
        }
        let current = state.current(SystemTime::now());
        let progress = |_: &str| {};
        // One attempt: this loop owns the backoff, and keeps answering rotates meanwhile.
        let outcome = match issue::issue(&issue, &secrets, current, Instant::now(), &progress).await
        {
            Ok(issued) => write(&issue, issued).map_err(Failed::from),
            Err(e) => Err(Failed::from(e)),
        };
        match &outcome {
            Ok(rotated) => {
                retry_at = None;
                log.worked();
                stats.last_ok.store(1, Relaxed);
                stats.last_success.store(unix(SystemTime::now()), Relaxed);
                tracing::info!(why, serial = %rotated.serial, not_after = unix(rotated.not_after), "the pki issued a new certificate; serving it on new connections");
                let _ = r.control.send(Control::Identity { why: "renewed" }).await;
            }
            Err(failed) => {
                stats.last_ok.store(0, Relaxed);
                stats.failures.fetch_add(1, Relaxed);
                let delay = backoff(log.in_a_row + 1, failed.kind(), &state);
                retry_at = Some(Instant::now() + delay);
                log.failed(why, failed, delay, state.not_after());
            }
        }
        if let Some(ask) = asked {
            let _ = ask.reply.send(outcome.map_err(|e| e.to_string()));
        }
    }
}

/// The wait after the `failures`th failure in a row: 1 s doubling, with jitter, up to
/// 5 min. An unreachable engine is capped at a tenth of the validity left (at least 1 s),
/// so a certificate close to its end is retried often; an engine that answered (refused,
/// or with a bad certificate) will likely answer the same, and is not.
fn backoff(failures: u32, kind: &str, state: &State) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    let cap = if kind == "unreachable" {
        let left = match state {
            State::Held(held) => held
                .not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
            State::Missing | State::Unusable(_) => Duration::ZERO,
        };
        (left / 10).clamp(Duration::from_secs(1), MAX)
    } else {
        MAX
    };
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
    use crate::pki::{Authority, Leaf, Usage};

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

    fn held(issued_at: SystemTime, not_after: SystemTime) -> Held {
        Held {
            not_before: issued_at,
            not_after,
            issued_at,
            stale: None,
        }
    }

    /// Renewal is due a third of the lifetime before notAfter by default, at
    /// `renew_before` when set, and jitter only brings it forward.
    #[test]
    fn renewal_is_due_in_the_window() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(90);
        let cert = held(start, end);
        assert_eq!(
            due(&issue(None, Some(0)), &cert),
            start + Duration::from_secs(60)
        );
        assert_eq!(
            due(&issue(Some(40), Some(0)), &cert),
            start + Duration::from_secs(50)
        );
        for _ in 0..100 {
            let at = due(&issue(Some(40), Some(10)), &cert);
            assert!(at >= start + Duration::from_secs(40) && at <= start + Duration::from_secs(50));
        }
        // A window longer than the lifetime is due at once.
        assert_eq!(due(&issue(Some(900), Some(0)), &cert), start);
    }

    /// The engine's back-dating of notBefore (OpenBao's 30 s) does not count toward "a
    /// third of the lifetime": a 90 s certificate is due 30 s before its end, not 40 s.
    #[test]
    fn back_dating_does_not_count_toward_the_lifetime() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = issued + Duration::from_secs(90);
        let cert = Held {
            not_before: issued - Duration::from_secs(30),
            ..held(issued, end)
        };
        assert_eq!(
            due(&issue(None, Some(0)), &cert),
            issued + Duration::from_secs(60)
        );
    }

    /// The backoff doubles from about a second; an unreachable engine stays under a tenth
    /// of what is left, an engine that answered badly backs off up to 5 minutes whatever is
    /// left.
    #[test]
    fn backoff_is_bounded() {
        let now = SystemTime::now();
        let cert = State::Held(held(now, now + Duration::from_secs(100)));
        assert!(backoff(1, "unreachable", &cert) <= Duration::from_secs(2));
        assert!(backoff(30, "unreachable", &cert) <= Duration::from_secs(10));
        assert!(backoff(30, "unreachable", &State::Missing) <= Duration::from_secs(1));
        assert!(backoff(1, "bad certificate", &State::Missing) >= Duration::from_secs(1));
        assert!(backoff(3, "bad certificate", &cert) >= Duration::from_secs(4));
        let long = backoff(30, "bad certificate", &State::Missing);
        assert!(long >= Duration::from_secs(150) && long <= Duration::from_secs(300));
        // Five seconds of "bad certificate" answers: at most four attempts.
        let (mut at, mut attempts) = (Duration::ZERO, 0);
        while at < Duration::from_secs(5) {
            attempts += 1;
            at += backoff(attempts, "bad certificate", &State::Missing);
        }
        assert!(attempts <= 4, "{attempts}");
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

    /// The state file is read back as held (stale when the names asked for changed), or
    /// unusable when its key is another or it chains to another CA; setting it aside
    /// renames it and keeps it.
    #[test]
    fn the_state_file_is_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("pki").unwrap();
        let trust = dir.path().join("trust.pem");
        std::fs::write(&trust, ca.cert_pem()).unwrap();
        let mut issue = issue(None, None);
        issue.state_dir = dir.path().join("state");
        issue.issuer_ca = trust;
        let file = issue.file();
        let now = SystemTime::now();
        assert_eq!(State::read(&issue, now), State::Missing);

        let pem = ca.issue(&Leaf::new("d", &[], Usage::Server, 1)).unwrap();
        replace(
            &issue.state_dir,
            &file,
            format!("{}{}", pem.key, pem.cert).as_bytes(),
        )
        .unwrap();
        let State::Held(cert) = State::read(&issue, SystemTime::now()) else {
            panic!("{:?}", State::read(&issue, now));
        };
        assert_eq!(cert.stale, None);
        // Written now: its lifetime counts from the file's time, not from notBefore.
        assert!(cert.issued_at > cert.not_before);
        assert!(cert.issued_at <= SystemTime::now());

        let mut renamed = issue.clone();
        renamed.alt_names = vec!["d.example".into()];
        let State::Held(cert) = State::read(&renamed, now) else {
            panic!()
        };
        assert_eq!(cert.stale.as_deref(), Some("it lacks DNS:d.example"));

        let other = ca.issue(&Leaf::new("d", &[], Usage::Server, 1)).unwrap();
        replace(
            &issue.state_dir,
            &file,
            format!("{}{}", other.key, pem.cert).as_bytes(),
        )
        .unwrap();
        let State::Unusable(reason) = State::read(&issue, now) else {
            panic!()
        };
        assert!(reason.contains("public key is not the one"), "{reason}");

        let stranger = Authority::new("another").unwrap();
        let theirs = stranger
            .issue(&Leaf::new("d", &[], Usage::Server, 1))
            .unwrap();
        replace(
            &issue.state_dir,
            &file,
            format!("{}{}", theirs.key, theirs.cert).as_bytes(),
        )
        .unwrap();
        let State::Unusable(reason) = State::read(&issue, now) else {
            panic!()
        };
        assert!(reason.contains("does not chain"), "{reason}");

        let aside = set_aside(&file, now).unwrap();
        assert!(!file.exists());
        assert!(
            aside.to_str().unwrap().contains("issued.pem.rejected-"),
            "{aside:?}"
        );
        assert!(
            std::fs::read_to_string(&aside)
                .unwrap()
                .contains(&theirs.cert)
        );
        assert_eq!(State::read(&issue, now), State::Missing);
    }

    /// An expired certificate of ours is held (and due), not set aside.
    #[test]
    fn an_expired_certificate_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("pki").unwrap();
        let trust = dir.path().join("trust.pem");
        std::fs::write(&trust, ca.cert_pem()).unwrap();
        let mut issue = issue(None, None);
        issue.state_dir = dir.path().join("state");
        issue.issuer_ca = trust;
        let mut old = Leaf::new("d", &[], Usage::Server, 1);
        old.not_before = SystemTime::now() - Duration::from_secs(7200);
        old.not_after = SystemTime::now() - Duration::from_secs(3600);
        let pem = ca.issue(&old).unwrap();
        replace(
            &issue.state_dir,
            &issue.file(),
            format!("{}{}", pem.key, pem.cert).as_bytes(),
        )
        .unwrap();
        let state = State::read(&issue, SystemTime::now());
        assert!(
            matches!(state, State::Held(Held { stale: None, .. })),
            "{state:?}"
        );
        assert!(matches!(
            state.current(SystemTime::now()),
            Current::Expired { .. }
        ));
    }
}

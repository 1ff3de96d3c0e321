//! grpc.health.v1 from the outside: one Check with grpc_health_probe's messages and exit
//! codes, a Watch that prints every change, List, and a sweep over many targets.
//!
//! Every probe closes its connection politely before it returns (GOAWAY, close_notify,
//! FIN, the server's goodbye read), so a fleet of probes leaves no resets in server logs.

use std::{
    future::Future,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use futures_util::StreamExt;
use tonic::{Code, Request, Status, codec::CompressionEncoding, transport::Channel};

use super::{Conn, Dial, exit};
use crate::{
    error::chain,
    proto::health::{
        HealthCheckRequest, HealthListRequest, health_check_response::ServingStatus,
        health_client::HealthClient,
    },
};

/// How long a probe waits for its connection to close politely.
const CLOSE_WAIT: Duration = Duration::from_millis(600);

/// What a probe of one target came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub target: String,
    /// SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, or UNREACHABLE, RPC_FAILED, INVALID.
    pub status: String,
    /// The exit code this outcome means.
    pub exit_code: u8,
    /// The line grpc_health_probe prints for it.
    pub message: String,
    /// What grpc_health_probe does not say: for a connection that timed out, how many
    /// attempts were made and why the last one failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(serialize_with = "millis")]
    pub connect: Option<Duration>,
    #[serde(serialize_with = "millis")]
    pub rpc: Option<Duration>,
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3),
        None => s.serialize_none(),
    }
}

/// What one probe sends.
#[derive(Debug, Clone)]
pub struct Probe {
    pub service: String,
    pub rpc_timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
}

impl Outcome {
    fn failed(target: &str, status: &str, exit_code: u8, message: String) -> Outcome {
        Outcome {
            target: target.to_string(),
            status: status.to_string(),
            exit_code,
            message,
            detail: None,
            connect: None,
            rpc: None,
        }
    }

    fn of_status(target: &str, status: ServingStatus) -> Outcome {
        let serving = status == ServingStatus::Serving;
        Outcome {
            target: target.to_string(),
            status: status.as_str_name().to_string(),
            exit_code: if serving { exit::OK } else { exit::NOT_SERVING },
            message: if serving {
                format!("status: {}", status.as_str_name())
            } else {
                format!(
                    "service unhealthy (responded with \"{}\")",
                    status.as_str_name()
                )
            },
            detail: None,
            connect: None,
            rpc: None,
        }
    }
}

/// Adds `key: value` pairs to a request's metadata (keys were checked when parsed).
pub fn add_headers<T>(request: &mut Request<T>, headers: &[(String, String)]) {
    for (key, value) in headers {
        if let (Ok(key), Ok(value)) = (
            key.parse::<tonic::metadata::MetadataKey<_>>(),
            value.parse::<tonic::metadata::MetadataValue<_>>(),
        ) {
            request.metadata_mut().append(key, value);
        }
    }
}

/// gRPC's connection backoff (connection-backoff.md), which grpc-go's blocking dial, and so
/// grpc_health_probe, waits out between attempts: 1 s before the first retry, then 1.6
/// times longer each time up to 120 s, each wait ±20%.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const BACKOFF_MULTIPLIER: f64 = 1.6;
const BACKOFF_JITTER: f64 = 0.2;
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// `bound` ±[`BACKOFF_JITTER`], with `random` in [0, 1).
fn jittered(bound: Duration, random: f64) -> Duration {
    bound.mul_f64(1.0 - BACKOFF_JITTER + 2.0 * BACKOFF_JITTER * random.clamp(0.0, 1.0))
}

/// A duration as Go's `time.Duration` prints it (`300ms`, `1s`, `1.5s`, `1m30s`,
/// `1h0m0s`), which grpc_health_probe's messages show.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    /// `value / unit` with the fraction's trailing zeros dropped.
    fn decimal(value: u128, unit: u128, digits: usize) -> String {
        let (whole, frac) = (value / unit, value % unit);
        if frac == 0 {
            return whole.to_string();
        }
        let frac = format!("{frac:0digits$}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000, 6));
    }
    let (hours, rest) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = format!("{}s", decimal(rest, 1_000_000_000, 9));
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// Connects as grpc_health_probe does: attempt after attempt, with gRPC's connection backoff
/// between them, until one succeeds or `connect_timeout` has passed since the first began
/// (grpc-go's blocking dial under a deadline). Running out of time is exit 2 with its
/// `timeout: failed to connect service "ADDR" within 1s`, the last attempt's error kept
/// as the outcome's detail; bad arguments (exit 1) are not retried.
async fn connect(dial: &Dial) -> Result<(Conn, Duration), Outcome> {
    let started = Instant::now();
    let deadline = started + dial.connect_timeout;
    let mut backoff = INITIAL_BACKOFF;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let attempt = Dial {
            connect_timeout: deadline.saturating_duration_since(Instant::now()),
            ..dial.clone()
        };
        let err = match attempt.open().await {
            Ok(conn) => return Ok((conn, started.elapsed())),
            Err(err) => err,
        };
        if err.exit_code() == exit::ARGS {
            let message = format!("error: {}", chain(&err));
            return Err(Outcome::failed(&dial.addr, "INVALID", exit::ARGS, message));
        }
        let wait = jittered(backoff, fastrand::f64());
        backoff = backoff.mul_f64(BACKOFF_MULTIPLIER).min(MAX_BACKOFF);
        if Instant::now() + wait < deadline {
            tokio::time::sleep(wait).await;
            continue;
        }
        // As grpc-go's dial, which returns at its deadline, not at the last failure.
        tokio::time::sleep_until(deadline.into()).await;
        let mut outcome = Outcome::failed(
            &dial.addr,
            "UNREACHABLE",
            exit::CONNECT,
            format!(
                "timeout: failed to connect service \"{}\" within {}",
                dial.addr,
                go_duration(dial.connect_timeout)
            ),
        );
        let last = match err {
            super::Error::ConnectTimeout { .. } => "it did not finish in time".to_string(),
            err => chain(&err),
        };
        let tries = if attempts == 1 { "attempt" } else { "attempts" };
        outcome.detail = Some(format!("{attempts} {tries}; the last: {last}"));
        return Err(outcome);
    }
}

/// An RPC failure as grpc_health_probe words it: exit 3.
fn rpc_failed(target: &str, status: &Status, rpc_timeout: Duration) -> Outcome {
    let message = match status.code() {
        Code::Unimplemented => {
            let mut message = "error: this server does not implement the grpc health protocol \
                               (grpc.health.v1.Health)"
                .to_string();
            if !status.message().is_empty() {
                message = format!("{message}: {}", status.message());
            }
            message
        }
        Code::DeadlineExceeded => {
            format!(
                "timeout: health rpc did not complete within {}",
                go_duration(rpc_timeout)
            )
        }
        Code::Cancelled if status.message().contains("Timeout expired") => {
            format!(
                "timeout: health rpc did not complete within {}",
                go_duration(rpc_timeout)
            )
        }
        _ => format!(
            "error: health rpc failed: rpc error: code = {:?} desc = {}",
            status.code(),
            status.message()
        ),
    };
    Outcome::failed(target, "RPC_FAILED", exit::RPC, message)
}

fn client(channel: Channel, gzip: bool) -> HealthClient<Channel> {
    let client = HealthClient::new(channel);
    if gzip {
        client
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip)
    } else {
        client
    }
}

impl Probe {
    fn request<T>(&self, message: T, timeout: Option<Duration>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        add_headers(&mut request, &self.headers);
        request
    }

    /// One Check: connect, call under the RPC timeout, close politely.
    pub async fn check(&self, dial: &Dial) -> Outcome {
        let (conn, connect_took) = match connect(dial).await {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let started = Instant::now();
        let mut health = client(conn.channel, self.gzip);
        let request = self.request(
            HealthCheckRequest {
                service: self.service.clone(),
            },
            Some(self.rpc_timeout),
        );
        let result = match tokio::time::timeout(self.rpc_timeout, health.check(request)).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded("rpc timeout")),
        };
        let rpc_took = started.elapsed();
        drop(health);
        conn.liveness.closed(CLOSE_WAIT).await;
        let mut outcome = match result {
            Ok(response) => Outcome::of_status(&dial.addr, response.into_inner().status()),
            Err(status) => rpc_failed(&dial.addr, &status, self.rpc_timeout),
        };
        outcome.connect = Some(connect_took);
        outcome.rpc = Some(rpc_took);
        outcome
    }

    /// Follows Watch, calling `on_status` with every status the server sends, until the
    /// stream ends (exit 3, the last status named) or `stop` resolves (the exit code of the
    /// last status).
    pub async fn watch(
        &self,
        dial: &Dial,
        stop: impl Future<Output = ()>,
        mut on_status: impl FnMut(ServingStatus),
    ) -> Outcome {
        let (conn, _) = match connect(dial).await {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let mut last = None;
        let watching = async {
            let request = self.request(
                HealthCheckRequest {
                    service: self.service.clone(),
                },
                None,
            );
            let mut stream = client(conn.channel.clone(), self.gzip)
                .watch(request)
                .await?
                .into_inner();
            while let Some(response) = stream.message().await? {
                let status = response.status();
                last = Some(status);
                on_status(status);
            }
            Ok::<_, Status>(())
        };
        tokio::pin!(stop);
        let ended = tokio::select! {
            ended = watching => Some(ended),
            () = &mut stop => None,
        };
        drop(conn.channel);
        conn.liveness.closed(CLOSE_WAIT).await;
        let last_name = last.map_or("none", |s| s.as_str_name());
        match ended {
            None => match last {
                Some(status) => Outcome::of_status(&dial.addr, status),
                None => Outcome::failed(
                    &dial.addr,
                    "RPC_FAILED",
                    exit::RPC,
                    "error: no status yet".into(),
                ),
            },
            Some(Ok(())) => Outcome::failed(
                &dial.addr,
                last_name,
                exit::RPC,
                format!("error: the server ended the watch (last status {last_name})"),
            ),
            Some(Err(status)) if status.code() == Code::Unimplemented => {
                rpc_failed(&dial.addr, &status, self.rpc_timeout)
            }
            Some(Err(status)) => Outcome::failed(
                &dial.addr,
                "RPC_FAILED",
                exit::RPC,
                format!(
                    "error: watch ended: {}: {} (last status {last_name})",
                    crate::rpc_stats::code_name(status.code()),
                    status.message()
                ),
            ),
        }
    }

    /// List: every service and its status, sorted by name; exit 4 if any is not SERVING.
    pub async fn list(&self, dial: &Dial) -> (Outcome, Vec<(String, ServingStatus)>) {
        let (conn, connect_took) = match connect(dial).await {
            Ok(c) => c,
            Err(outcome) => return (outcome, Vec::new()),
        };
        let mut health = client(conn.channel, self.gzip);
        let request = self.request(HealthListRequest {}, Some(self.rpc_timeout));
        let result = match tokio::time::timeout(self.rpc_timeout, health.list(request)).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded("rpc timeout")),
        };
        drop(health);
        conn.liveness.closed(CLOSE_WAIT).await;
        match result {
            Ok(response) => {
                let mut statuses: Vec<_> = response
                    .into_inner()
                    .statuses
                    .into_iter()
                    .map(|(name, r)| (name, r.status()))
                    .collect();
                statuses.sort();
                let worst = statuses
                    .iter()
                    .map(|(_, s)| *s)
                    .find(|s| *s != ServingStatus::Serving)
                    .unwrap_or(ServingStatus::Serving);
                let mut outcome = Outcome::of_status(&dial.addr, worst);
                outcome.connect = Some(connect_took);
                (outcome, statuses)
            }
            Err(status) => (
                rpc_failed(&dial.addr, &status, self.rpc_timeout),
                Vec::new(),
            ),
        }
    }

    /// Checks every target, `concurrency` at a time; outcomes in the targets' order.
    pub async fn sweep(
        &self,
        dialer: &Dial,
        targets: &[String],
        concurrency: usize,
    ) -> Vec<Outcome> {
        futures_util::stream::iter(targets)
            .map(|target| {
                let dial = dialer.target(target);
                async move { self.check(&dial).await }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await
    }
}

/// Targets from a file: one per line, blank lines and `#` comments skipped.
pub fn read_targets(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The exit code of a sweep: 0 when every target serves, else the lowest non-zero code
/// (the earliest stage that failed: 2 unreachable, 3 RPC failed, 4 not serving).
pub fn sweep_exit_code(outcomes: &[Outcome]) -> u8 {
    outcomes
        .iter()
        .map(|o| o.exit_code)
        .filter(|c| *c != exit::OK)
        .min()
        .unwrap_or(exit::OK)
}

/// A sweep as a table.
pub fn sweep_table(outcomes: &[Outcome]) -> String {
    use std::fmt::Write;
    let width = outcomes
        .iter()
        .map(|o| o.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<width$}  {:<15}  {:>4}  {:>9}  DETAIL\n",
        "TARGET", "STATUS", "EXIT", "TIME"
    );
    for o in outcomes {
        let took = o.connect.unwrap_or_default() + o.rpc.unwrap_or_default();
        let detail = match (o.exit_code, &o.detail) {
            (exit::OK, _) => String::new(),
            (_, Some(detail)) => format!("{} ({detail})", o.message),
            (_, None) => o.message.clone(),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<15}  {:>4}  {:>9}  {detail}",
            o.target,
            o.status,
            o.exit_code,
            format!("{:.1}ms", took.as_secs_f64() * 1e3),
        );
    }
    let healthy = outcomes.iter().filter(|o| o.exit_code == exit::OK).count();
    let _ = writeln!(out, "{healthy} of {} serving", outcomes.len());
    out
}

/// A sweep as JSON.
pub fn sweep_json(outcomes: &[Outcome]) -> String {
    let healthy = outcomes.iter().filter(|o| o.exit_code == exit::OK).count();
    serde_json::to_string_pretty(&serde_json::json!({
        "targets": outcomes,
        "serving": healthy,
        "unhealthy": outcomes.len() - healthy,
        "exit_code": sweep_exit_code(outcomes),
    }))
    .expect("outcomes serialise")
}

/// `2024-05-01T12:00:00.123Z`, for watch lines.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps come out as RFC 3339 UTC, leap years included.
    #[test]
    fn timestamps() {
        let at = |secs: u64, ms: u64| {
            timestamp(
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms),
            )
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_210_096, 999), "2024-02-29T12:34:56.999Z");
    }

    /// A sweep exits 0 only if all serve, else with the earliest failing stage.
    #[test]
    fn sweep_exit_codes() {
        let o = |code| Outcome::failed("t", "x", code, String::new());
        assert_eq!(sweep_exit_code(&[o(0), o(0)]), 0);
        assert_eq!(sweep_exit_code(&[o(0), o(4), o(3)]), 3);
        assert_eq!(sweep_exit_code(&[o(4), o(2), o(0)]), 2);
        assert_eq!(sweep_exit_code(&[]), 0);
    }

    /// Durations print as Go prints them, as grpc_health_probe's messages show them.
    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (ms(300), "300ms"),
            (ms(1), "1ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(7), "7ns"),
            (ms(1000), "1s"),
            (ms(1500), "1.5s"),
            (ms(30_000), "30s"),
            (ms(90_000), "1m30s"),
            (ms(120_000), "2m0s"),
            (ms(61_250), "1m1.25s"),
            (ms(3_600_000), "1h0m0s"),
            (ms(5_430_000), "1h30m30s"),
        ] {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    /// Waits between connection attempts stay within gRPC's ±20% of the bound.
    #[test]
    fn backoff_jitter_is_twenty_percent() {
        let second = Duration::from_secs(1);
        assert_eq!(jittered(second, 0.0), Duration::from_millis(800));
        assert_eq!(jittered(second, 0.5), second);
        assert!(jittered(second, 0.999_999) <= Duration::from_millis(1200));
        assert_eq!(jittered(second, 7.0), Duration::from_millis(1200));
    }

    /// Target files skip blanks and comments.
    #[test]
    fn target_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.txt");
        std::fs::write(&path, "# fleet\na:1\n\n  b:2  # rack 2\n").unwrap();
        assert_eq!(read_targets(&path).unwrap(), ["a:1", "b:2"]);
    }
}

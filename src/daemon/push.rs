//! The remote_write push: a task the daemon starts and stops, reconfigured on reload, that
//! sends the series `GET /metrics` serves ([`crate::series`]) as Prometheus remote_write
//! 1.0 (protobuf, snappy) to `push.url` every `push.interval` (±10%), and at once when a
//! health status changes.
//!
//! Each push is one batch: every series with one sample, stamped now, with the device's
//! external labels (`instance` and `push.labels`). Batches wait in a [`Buffer`] bounded by
//! `push.buffer_size` (and, with `push.buffer_dir`, in one file each, so a restart keeps
//! them) and go out oldest first, one request at a time. A failed request (no connection,
//! a timeout, 5xx, 429) is retried after an exponential backoff with jitter; another 4xx
//! drops that batch and says why, once. A full buffer drops its oldest batches, counted.
//!
//! The request runs beside the task's timers, so a slow receiver delays no batch, and
//! nothing here is on the path of a call, a health check or a reload.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{self, PushAuth},
    health::Health,
    outbound, remote_write,
    rpc_stats::RpcStats,
    sampler::{Live, Published},
    secrets::Secrets,
    series::{self, DaemonStats, PushStats, Sink, Sources, Type},
    tls,
};

/// Largest answer body read from the receiver (it is only shown in a message).
const MAX_ANSWER: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("push: {0}")]
    Client(String),
    #[error("push: {0}")]
    Tls(#[from] tls::Error),
    #[error("push.buffer_dir: {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where and how to push, resolved from `[push]` and the pulled secrets.
pub struct Settings {
    client: outbound::Client,
    /// The URL's path and query.
    path: String,
    /// The URL without its query, for messages.
    shown: String,
    interval: Duration,
    /// External labels, sorted by name.
    labels: Vec<(String, String)>,
    bearer: Option<HeaderValue>,
    min_backoff: Duration,
    max_backoff: Duration,
    /// False when the client certificate lacks the clientAuth usage: a refused handshake
    /// is then said to be about it.
    client_auth: bool,
}

impl Settings {
    /// `None` when no push is configured. Reads the client certificate and key for mtls.
    pub fn new(
        push: &config::Push,
        secrets: &Secrets,
        instance: &str,
    ) -> Result<Option<Settings>, Error> {
        let Some(url) = &push.url else {
            return Ok(None);
        };
        let https = url.starts_with("https://");
        let (base, path) = match url
            .find("://")
            .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
        {
            Some(slash) => (&url[..slash], &url[slash..]),
            None => (url.as_str(), "/"),
        };
        let mut client_auth = true;
        let tls = if https {
            let identity = match &push.auth {
                PushAuth::Mtls { cert, key } => {
                    let chain = tls::load_certs(cert)?;
                    client_auth = chain
                        .first()
                        .and_then(|leaf| crate::x509::allows_client_auth(leaf))
                        .unwrap_or(true);
                    if !client_auth {
                        tracing::warn!(
                            cert = %cert.display(),
                            "push: the client certificate has no clientAuth extended key usage (serverAuth only): a receiver that checks the usage refuses the handshake (BadCertificate); issue the device's certificate with serverAuth and clientAuth (certs/README.md)"
                        );
                    }
                    Some((chain, secrets.key(key)?.der))
                }
                PushAuth::None | PushAuth::Bearer { .. } => None,
            };
            Some(
                outbound::tls_config(&push.ca_cert, identity, &[tls::ALPN_HTTP1])
                    .map_err(|e| Error::Client(e.reason().to_owned()))?,
            )
        } else {
            None
        };
        let client = outbound::Client::new(base, tls, push.timeout)
            .map_err(|e| Error::Client(e.reason().to_owned()))?;
        let bearer = match &push.auth {
            PushAuth::Bearer { token } => {
                let token = secrets
                    .get(token)
                    .ok_or_else(|| Error::Client(format!("secret `{token}` was not pulled")))?;
                let mut value = HeaderValue::from_bytes(&[b"Bearer ", token.expose()].concat())
                    .map_err(|_| {
                        Error::Client("the bearer token is not a valid header value".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            PushAuth::None | PushAuth::Mtls { .. } => None,
        };
        let mut labels: Vec<(String, String)> = push.labels.clone().into_iter().collect();
        if !push.labels.contains_key("instance") {
            labels.push(("instance".into(), instance.to_owned()));
        }
        labels.sort();
        Ok(Some(Settings {
            client,
            path: path.to_owned(),
            shown: url.split('?').next().unwrap_or_default().to_owned(),
            interval: push.interval,
            labels,
            bearer,
            min_backoff: push.min_backoff,
            max_backoff: push.max_backoff,
            client_auth,
        }))
    }

    /// Where it pushes, for the startup line: the URL without its query.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// A remote_write `WriteRequest` being built: a [`Sink`] for [`series::collect`].
struct Encoder<'a> {
    externals: &'a [(String, String)],
    timestamp_ms: i64,
    name: String,
    request: remote_write::Request,
    /// Encoded bytes past which the request is closed and a new one begun.
    split_at: usize,
    /// The requests closed so far.
    full: Vec<remote_write::Request>,
}

impl Sink for Encoder<'_> {
    fn family(&mut self, name: &str, _help: &str, _kind: Type) {
        self.name.clear();
        self.name.push_str(name);
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let name = format!("{}{suffix}", self.name);
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + 4);
        all.push(("__name__", &name));
        all.extend(labels.iter().filter(|(_, v)| !v.is_empty()));
        for (k, v) in self.externals {
            // A series' own label wins over an external one, as in Prometheus.
            if !labels.iter().any(|(own, _)| own == k) {
                all.push((k, v));
            }
        }
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.request.push(&all, value, self.timestamp_ms);
        if self.request.encoded_len() >= self.split_at {
            let full =
                std::mem::replace(&mut self.request, remote_write::Request::with_capacity(0));
            self.full.push(full);
        }
    }
}

/// One push's worth: the compressed request body and how many samples it holds.
#[derive(Clone)]
struct Batch {
    seq: u64,
    samples: u64,
    body: Bytes,
}

/// What a batch is built from.
pub struct Inputs {
    pub snapshots: watch::Receiver<Published>,
    /// The live reader the scrape uses too: a push's counters are as of the push.
    pub live: Arc<std::sync::Mutex<Live>>,
    pub stats: Arc<RpcStats>,
    pub health: Health,
    pub counters: Arc<DaemonStats>,
}

impl Inputs {
    /// Every series now, encoded and compressed into as many batches as it takes for none
    /// to be larger than `max` bytes (the buffer's size: a batch is never kept whole past
    /// it); none before the first sample (or, said in the log, for a body over snappy's
    /// 4 GiB limit). `seq` gives each batch its number.
    fn batches(
        &self,
        externals: &[(String, String)],
        max: usize,
        seq: impl FnMut() -> u64,
    ) -> Vec<Batch> {
        let snapshot = self.snapshots.borrow().clone();
        if snapshot.sampled_at_unix_ms == 0 {
            return Vec::new();
        }
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).read();
        let now = SystemTime::now();
        let sources = Sources {
            snapshot: &snapshot,
            live: Some(&live),
            rpc: &self.stats,
            health: &self.health.statuses(),
            checks: &self.health.verdicts(),
            daemon: &self.counters,
            restarts: &crate::supervise::restarts(),
            now,
        };
        encode(&sources, externals, max, seq)
    }
}

/// `sources` encoded and compressed into batches of at most `max` bytes (see
/// [`Inputs::batches`]).
fn encode(
    sources: &Sources,
    externals: &[(String, String)],
    max: usize,
    mut seq: impl FnMut() -> u64,
) -> Vec<Batch> {
    let mut encoder = Encoder {
        externals,
        timestamp_ms: sources
            .now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        name: String::new(),
        request: remote_write::Request::with_capacity(64 << 10),
        // snappy's worst case is the input and a sixth more: split early enough that
        // even that fits.
        split_at: (max / 7 * 6).max(1),
        full: Vec::new(),
    };
    series::collect(sources, &mut encoder);
    let mut requests = encoder.full;
    if encoder.request.series() > 0 {
        requests.push(encoder.request);
    }
    requests
        .into_iter()
        .filter_map(|request| {
            let body = request
                .body()
                .map_err(|e| tracing::warn!(reason = %e, "push: a batch could not be compressed; skipping it"))
                .ok()?;
            Some(Batch {
                seq: seq(),
                samples: request.series(),
                body: Bytes::from(body),
            })
        })
        .collect()
}

/// File operations, done in order by one thread so a batch's file is never removed
/// before it is written.
enum FileOp {
    Write { name: String, body: Bytes },
    Remove { name: String },
}

/// Batches waiting to be pushed, oldest first, bounded in bytes; with a directory, each
/// batch is also a file `<seq>-<samples>.rw` there.
pub struct Buffer {
    batches: VecDeque<Batch>,
    bytes: usize,
    max: usize,
    next_seq: u64,
    files: Option<(std::sync::mpsc::Sender<FileOp>, std::thread::JoinHandle<()>)>,
    stats: Arc<DaemonStats>,
}

fn file_name(batch: &Batch) -> String {
    format!("{:016x}-{}.rw", batch.seq, batch.samples)
}

impl Buffer {
    /// An empty buffer of `max` bytes; with `dir`, what an earlier run left there is
    /// loaded first (the oldest dropped, and counted, if it no longer fits).
    pub fn new(max: usize, dir: Option<&Path>, stats: Arc<DaemonStats>) -> Result<Buffer, Error> {
        let mut buffer = Buffer {
            batches: VecDeque::new(),
            bytes: 0,
            max,
            next_seq: 0,
            files: None,
            stats,
        };
        let Some(dir) = dir else {
            return Ok(buffer);
        };
        let io = |source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let Some(name) = name.to_str() else { continue };
            let parsed = name.strip_suffix(".rw").and_then(|stem| {
                let (seq, samples) = stem.split_once('-')?;
                Some((
                    u64::from_str_radix(seq, 16).ok()?,
                    samples.parse::<u64>().ok()?,
                ))
            });
            match parsed {
                Some((seq, samples)) => found.push((seq, samples, name.to_owned())),
                // A write cut short by a crash: its rename never happened.
                None if name.ends_with(".tmp") => {
                    let _ = std::fs::remove_file(dir.join(name));
                }
                None => {}
            }
        }
        found.sort();
        let (tx, rx) = std::sync::mpsc::channel::<FileOp>();
        let thread_dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("vitals-push-files".into())
            .spawn(move || write_files(&thread_dir, rx))
            .map_err(io)?;
        buffer.files = Some((tx, thread));
        for (seq, samples, name) in found {
            // The buffer's own files, yet read as any other: no batch is larger than the
            // whole buffer.
            match crate::file::read(&dir.join(&name), max as u64) {
                Ok(body) => {
                    buffer.next_seq = seq + 1;
                    buffer.admit(Batch {
                        seq,
                        samples,
                        body: Bytes::from(body),
                    });
                }
                Err(e) => {
                    tracing::warn!(file = %name, reason = %e, "push buffer: a buffered batch could not be read; skipping it")
                }
            }
        }
        Ok(buffer)
    }

    /// Adds a batch at the back, dropping the oldest ones that no longer fit.
    fn push(&mut self, batch: Batch) {
        if batch.body.len() > self.max {
            // Only a single series larger than the buffer gets here (batches are split to
            // fit it): refused, never kept whole past the bound.
            tracing::warn!(
                bytes = batch.body.len(),
                buffer_size = self.max,
                "push: a batch is larger than push.buffer_size on its own; dropping it"
            );
            self.stats
                .push
                .samples_dropped
                .fetch_add(batch.samples, Relaxed);
            return;
        }
        if let Some((files, _)) = &self.files {
            let _ = files.send(FileOp::Write {
                name: file_name(&batch),
                body: batch.body.clone(),
            });
        }
        self.admit(batch);
    }

    fn admit(&mut self, batch: Batch) {
        self.bytes += batch.body.len();
        self.batches.push_back(batch);
        while self.bytes > self.max && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.stats
                    .push
                    .samples_dropped
                    .fetch_add(old.samples, Relaxed);
                self.forget(&old);
            }
        }
        self.count();
    }

    /// Removes the batch `seq` if it is still here (a full buffer may have dropped it
    /// while it was being sent).
    fn remove(&mut self, seq: u64) -> Option<Batch> {
        let at = self.batches.iter().position(|b| b.seq == seq)?;
        let batch = self.batches.remove(at)?;
        self.forget(&batch);
        self.count();
        Some(batch)
    }

    fn forget(&mut self, batch: &Batch) {
        self.bytes -= batch.body.len();
        if let Some((files, _)) = &self.files {
            let _ = files.send(FileOp::Remove {
                name: file_name(batch),
            });
        }
    }

    fn count(&self) {
        let push = &self.stats.push;
        let samples = self.batches.iter().map(|b| b.samples).sum();
        push.buffered_samples.store(samples, Relaxed);
        push.buffered_bytes.store(self.bytes as u64, Relaxed);
        push.buffered_batches
            .store(self.batches.len() as u64, Relaxed);
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Waits until every file operation asked for has been done.
    async fn close(&mut self) {
        if let Some((tx, thread)) = self.files.take() {
            drop(tx);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The file thread: each batch written to a temporary name and renamed, so a crash leaves
/// a whole file or none; a failure is said once, and the batch stays in memory.
fn write_files(dir: &Path, ops: std::sync::mpsc::Receiver<FileOp>) {
    let mut warned = false;
    for op in ops {
        let result = match &op {
            FileOp::Write { name, body } => {
                let tmp = dir.join(format!("{name}.tmp"));
                std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, dir.join(name)))
            }
            FileOp::Remove { name } => match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        if let Err(e) = result
            && !warned
        {
            tracing::warn!(dir = %dir.display(), reason = %e, "push buffer: writing to the buffer directory failed; buffered samples may not survive a restart");
            warned = true;
        }
    }
}

/// What a request came to.
enum Outcome {
    Accepted,
    /// Worth another try later: the reason.
    Retry(String),
    /// The receiver refused this batch for good.
    Refused(StatusCode, String),
}

async fn send(settings: Arc<Settings>, body: Bytes) -> Outcome {
    let mut request = Request::post(settings.path.as_str())
        .header(header::CONTENT_ENCODING, "snappy")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(
            header::USER_AGENT,
            concat!("vitalsd/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    if let Some(bearer) = &settings.bearer {
        request = request.header(header::AUTHORIZATION, bearer.clone());
    }
    let Ok(request) = request.body(Full::new(body)) else {
        return Outcome::Retry("the request could not be built".into());
    };
    match settings.client.send(request, MAX_ANSWER).await {
        Ok(answer) if answer.status.is_success() => Outcome::Accepted,
        Ok(answer) => {
            let said = String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>();
            let status = answer.status;
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                Outcome::Retry(format!("{status}: {}", said.trim()))
            } else {
                Outcome::Refused(status, said.trim().to_owned())
            }
        }
        Err(e) => Outcome::Retry(e.reason().to_owned()),
    }
}

/// `d` ± 10%.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// The wait before retry `attempt` (1, 2, ...): `min` doubled each time up to `max`,
/// then a random point in its upper half.
fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let full = min
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Runs the push until `shutdown`; see the module docs.
pub async fn run(
    inputs: &Inputs,
    buffer: &mut Buffer,
    settings_rx: &mut watch::Receiver<Option<Arc<Settings>>>,
    shutdown: &CancellationToken,
) {
    let push: &PushStats = &inputs.counters.push;
    let mut health = inputs.health.subscribe();
    health.borrow_and_update();
    let mut settings = settings_rx.borrow_and_update().clone();
    let interval =
        |s: &Option<Arc<Settings>>| s.as_ref().map_or(Duration::from_secs(3600), |s| s.interval);
    let mut next_batch = Instant::now() + jitter(interval(&settings));
    type Sending = Pin<Box<dyn Future<Output = (u64, Outcome)> + Send>>;
    let mut sending: Option<Sending> = None;
    let mut retry_at: Option<Instant> = None;
    let mut attempt = 0u32;
    // What was said already: the failing state (so a retry loop says it once), and the
    // last refusal's status.
    let mut failing = false;
    let mut refused: Option<StatusCode> = None;
    loop {
        push.enabled.store(u64::from(settings.is_some()), Relaxed);
        if let (None, Some(s), Some(front)) = (&sending, &settings, buffer.batches.front())
            && retry_at.is_none_or(|at| at <= Instant::now())
        {
            let (seq, body, s) = (front.seq, front.body.clone(), s.clone());
            sending = Some(Box::pin(async move { (seq, send(s, body).await) }));
        }
        let mut make_batch = false;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sleep_until(next_batch) => {
                make_batch = true;
                next_batch = (next_batch + jitter(interval(&settings))).max(Instant::now());
            }
            changed = health.changed() => {
                if changed.is_err() { break }
                make_batch = true;
            }
            changed = settings_rx.changed() => {
                if changed.is_err() { break }
                let new = settings_rx.borrow_and_update().clone();
                if interval(&new) != interval(&settings) {
                    next_batch = Instant::now() + jitter(interval(&new));
                }
                settings = new;
                retry_at = None;
                attempt = 0;
            }
            _ = async { sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() && sending.is_none() => {
                retry_at = None;
            }
            (seq, outcome) = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                sending = None;
                match outcome {
                    Outcome::Accepted => {
                        if let Some(batch) = buffer.remove(seq) {
                            push.samples_sent.fetch_add(batch.samples, Relaxed);
                        }
                        push.batches_sent.fetch_add(1, Relaxed);
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                        push.last_success.store(now, Relaxed);
                        if failing {
                            tracing::info!(waiting = buffer.batches.len(), "push works again; sending what waited, oldest first");
                        }
                        failing = false;
                        refused = None;
                        attempt = 0;
                        retry_at = None;
                    }
                    Outcome::Retry(reason) => {
                        push.retries.fetch_add(1, Relaxed);
                        attempt += 1;
                        let (min, max) = settings.as_ref().map_or((Duration::from_secs(1), Duration::from_secs(60)), |s| (s.min_backoff, s.max_backoff));
                        let wait = backoff(attempt, min, max);
                        retry_at = Some(Instant::now() + wait);
                        // Said once per failing spell; vitals_push_retries_total counts them all.
                        let reason = match settings.as_ref() {
                            Some(s) if !s.client_auth && reason.contains("Certificate") => format!(
                                "{reason}: the receiver refused our client certificate, whose extended key usage is serverAuth without clientAuth"
                            ),
                            _ => reason,
                        };
                        if !failing {
                            tracing::warn!(%reason, retry_in_ms = wait.as_millis() as u64, "push failed; buffering and retrying with backoff");
                            failing = true;
                        }
                    }
                    Outcome::Refused(status, said) => {
                        if let Some(batch) = buffer.remove(seq) {
                            push.samples_rejected.fetch_add(batch.samples, Relaxed);
                        }
                        // Said once per status; vitals_push_samples_rejected_total counts them.
                        if refused != Some(status) {
                            tracing::warn!(status = status.as_u16(), answer = %said, "the receiver refused a push; that batch is dropped");
                            refused = Some(status);
                        }
                    }
                }
            }
        }
        if make_batch && let Some(s) = &settings {
            let max = buffer.max;
            let batches = inputs.batches(&s.labels, max, || buffer.next_seq());
            for batch in batches {
                buffer.push(batch);
            }
        }
    }
    buffer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::{Label, Sample, TimeSeries, WriteRequest};

    /// Backoff doubles from the minimum, stays under the maximum, and is jittered into
    /// the upper half of each step.
    #[test]
    fn backoff_doubles_with_jitter() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            let first = backoff(1, min, max);
            assert!(first >= min / 2 && first <= min, "{first:?}");
            let third = backoff(3, min, max);
            assert!(third >= min * 2 && third <= min * 4, "{third:?}");
            let late = backoff(40, min, max);
            assert!(late >= max / 2 && late <= max, "{late:?}");
        }
    }

    /// A full buffer drops its oldest batches and counts their samples; the file
    /// directory keeps what is buffered across a new buffer (a restart).
    #[tokio::test]
    async fn buffer_is_bounded_and_survives_a_restart() {
        let stats = Arc::new(DaemonStats::default());
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = Buffer::new(250, Some(dir.path()), stats.clone()).unwrap();
        for samples in 1..=4 {
            let seq = buffer.next_seq();
            buffer.push(Batch {
                seq,
                samples,
                body: Bytes::from(vec![samples as u8; 100]),
            });
        }
        assert_eq!(
            buffer.batches.len(),
            2,
            "250 bytes hold two 100-byte batches"
        );
        assert_eq!(stats.push.samples_dropped.load(Relaxed), 1 + 2);
        assert_eq!(stats.push.buffered_samples.load(Relaxed), 3 + 4);
        assert_eq!(stats.push.buffered_bytes.load(Relaxed), 200);
        buffer.remove(2);
        buffer.close().await;

        let mut again = Buffer::new(250, Some(dir.path()), stats.clone()).unwrap();
        let left: Vec<_> = again.batches.iter().map(|b| (b.seq, b.samples)).collect();
        assert_eq!(left, [(3, 4)]);
        assert_eq!(again.batches[0].body.as_ref(), &[4u8; 100][..]);
        assert_eq!(again.next_seq(), 4, "sequence numbers go on");
        again.close().await;
    }

    /// The samples of an encoder's body: snap's decoder, then prost.
    fn decoded(encoder: &Encoder) -> Vec<TimeSeries> {
        let body = encoder.request.body().unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        <WriteRequest as prost::Message>::decode(&raw[..])
            .unwrap()
            .timeseries
    }

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The encoder writes one time series per sample with `__name__`, its labels and the
    /// external ones sorted by name; a series' own label wins over an external one, and
    /// an empty label is left out.
    #[test]
    fn encodes_sorted_labels() {
        let externals = vec![
            ("device".to_string(), "external".to_string()),
            ("instance".to_string(), "gw-1".to_string()),
        ];
        let mut encoder = Encoder {
            externals: &externals,
            timestamp_ms: 1_700_000_000_000,
            name: String::new(),
            request: remote_write::Request::with_capacity(0),
            split_at: usize::MAX,
            full: Vec::new(),
        };
        encoder.family("node_network_receive_bytes", "", Type::Counter);
        encoder.sample("_total", &[("device", "eth0"), ("empty", "")], 42.0);
        assert_eq!(encoder.request.series(), 1);
        assert_eq!(
            decoded(&encoder),
            [TimeSeries {
                labels: vec![
                    label("__name__", "node_network_receive_bytes_total"),
                    label("device", "eth0"),
                    label("instance", "gw-1"),
                ],
                samples: vec![Sample {
                    value: 42.0,
                    timestamp: 1_700_000_000_000,
                }],
            }]
        );
    }

    /// A batch's body round-trips through snap's decoder and prost: every series, one
    /// sample each, in the order written, and it is smaller than what it compresses.
    #[test]
    fn a_body_round_trips() {
        let externals = vec![("instance".to_string(), "gw-1".to_string())];
        let mut encoder = Encoder {
            externals: &externals,
            timestamp_ms: 1_700_000_000_000,
            name: String::new(),
            request: remote_write::Request::with_capacity(0),
            split_at: usize::MAX,
            full: Vec::new(),
        };
        encoder.family("node_cpu_seconds", "", Type::Counter);
        for cpu in ["0", "1", "2", "3"] {
            for mode in ["idle", "user", "system"] {
                encoder.sample("_total", &[("cpu", cpu), ("mode", mode)], 1.5);
            }
        }
        let series = decoded(&encoder);
        assert_eq!(series.len(), 12);
        assert_eq!(encoder.request.series(), 12);
        assert_eq!(
            series[5].labels,
            [
                label("__name__", "node_cpu_seconds_total"),
                label("cpu", "1"),
                label("instance", "gw-1"),
                label("mode", "system"),
            ]
        );
        assert!(series.iter().all(|s| s.samples
            == [Sample {
                value: 1.5,
                timestamp: 1_700_000_000_000
            }]));
        let body = encoder.request.body().unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert!(body.len() < raw.len(), "{} >= {}", body.len(), raw.len());
    }

    /// A push larger than the buffer is split into batches that each fit it, none kept
    /// whole past it, with every series in one of them; small enough, it is one batch.
    #[test]
    fn a_push_larger_than_the_buffer_is_split() {
        // One reading of every source, encoded twice: the live counters and the global
        // task restarts (which other tests move) are the same for both.
        let snapshot = Arc::new(crate::series::tests::snapshot());
        let live = crate::sampler::Live::new(Default::default()).read();
        let (stats, counters) = (Arc::new(RpcStats::new()), Arc::new(DaemonStats::default()));
        let health = Health::new(&[], &[]);
        let sources = Sources {
            snapshot: &snapshot,
            live: Some(&live),
            rpc: &stats,
            health: &health.statuses(),
            checks: &health.verdicts(),
            daemon: &counters,
            restarts: &crate::supervise::restarts(),
            now: SystemTime::now(),
        };
        // Labels that make every series long, as a drop-in with many of them would.
        let externals: Vec<(String, String)> = (0..16)
            .map(|i| (format!("label_{i:02}"), format!("{i}").repeat(200)))
            .collect();
        let mut seq = 0;
        let whole = encode(&sources, &externals, 64 << 20, || {
            seq += 1;
            seq
        });
        assert_eq!(whole.len(), 1);
        let max = whole[0].body.len() / 5;
        let split = encode(&sources, &externals, max, || {
            seq += 1;
            seq
        });
        assert!(split.len() >= 5, "{} batches", split.len());
        assert!(split.iter().all(|b| b.body.len() <= max));
        assert_eq!(
            split.iter().map(|b| b.samples).sum::<u64>(),
            whole[0].samples
        );
        let seqs: Vec<u64> = split.iter().map(|b| b.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }
}

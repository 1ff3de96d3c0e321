//! `GET /metrics`: the Prometheus exposition of the sampler's last snapshot, the RPC
//! counters, health and the daemon's own counters, in the text format 0.0.4 or, when the
//! `Accept` header asks for it, OpenMetrics 1.0; gzip when accepted. The text is written by
//! prometheus-client ([`super::exposition`]); this module negotiates, compresses and reuses.
//!
//! A scrape reads the kernel's counters and small /proc files at the scrape, as
//! node_exporter does ([`crate::sampler::live`]), so a rate over them stays within what
//! the hardware can do; what is slow or can hang (statfs, sensors) comes from what the
//! sampler published, and the RPC counters are a few atomics. The series themselves are
//! built by [`crate::series`], which the remote_write push shares.
//!
//! A rendered page is served again for [`REUSE`]: scrapes that arrive together (a
//! Prometheus HA pair, or a flood from a client holding the grant) cost one render, so a
//! scrape flood cannot take the cores from the prober's calls.

use std::{
    convert::Infallible,
    io::Read as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tokio::sync::watch;
use tonic::codegen::BoxFuture;

use super::{
    exposition::{self, EncodeError, Exposition},
    metrics::first_sample,
};
use crate::{
    context::Page,
    health::Health,
    rpc_stats::RpcStats,
    sampler::{Live, Published},
    series::DaemonStats,
};

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPEN_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a rendered page is served again. A render costs 0.1-0.5 ms of a desktop core
/// in a release build (BENCHMARKS.md) and ~2 ms in a debug build; without this, a thousand
/// scrapes at once from one granted client rendered ~800 pages (debug build) and held an
/// established client's echo call for over a second. Now a flood costs at most 4 renders a second per variant. The
/// counters a page shows are at most this old, which no scraper sees: Prometheus stamps
/// samples with its own scrape time, and scrapes at most once a second.
const REUSE: Duration = Duration::from_millis(250);

/// The last page rendered in each variant (format by gzip), with when.
type Pages = [Option<(Instant, Bytes)>; 4];

/// The `/metrics` page.
#[derive(Clone)]
pub struct ScrapeService {
    snapshots: watch::Receiver<Published>,
    sampler_started: std::time::Instant,
    stats: Arc<RpcStats>,
    health: Health,
    daemon: Arc<DaemonStats>,
    /// The live reader, shared with the push.
    live: Arc<Mutex<Live>>,
    pages: Arc<Mutex<Pages>>,
}

impl ScrapeService {
    pub fn new(
        snapshots: watch::Receiver<Published>,
        sampler_started: std::time::Instant,
        stats: Arc<RpcStats>,
        health: Health,
        daemon: Arc<DaemonStats>,
        live: Arc<Mutex<Live>>,
    ) -> ScrapeService {
        ScrapeService {
            snapshots,
            sampler_started,
            stats,
            health,
            daemon,
            live,
            pages: Arc::default(),
        }
    }

    /// The exposition of `snapshot` in `format`, uncompressed.
    pub fn render(&self, snapshot: &Published, format: Format) -> Result<String, EncodeError> {
        exposition::encode(
            Exposition {
                snapshot: snapshot.clone(),
                live: Some(Box::new(
                    self.live.lock().unwrap_or_else(|e| e.into_inner()).read(),
                )),
                rpc: self.stats.clone(),
                health: self.health.statuses(),
                checks: self.health.verdicts(),
                daemon: self.daemon.clone(),
                restarts: crate::supervise::restarts(),
                now: SystemTime::now(),
            },
            format,
        )
    }
}

impl Page for ScrapeService {
    fn get(&self, headers: &HeaderMap) -> BoxFuture<Response<Bytes>, Infallible> {
        let format = Format::accepted(headers);
        let gzip = accepts_gzip(headers);
        let this = self.clone();
        Box::pin(async move {
            // Right after startup, wait (briefly) for the first complete sample, as the
            // gRPC Snapshot does.
            let snapshot = first_sample(this.snapshots.clone(), this.sampler_started).await;
            Ok(this.respond(&snapshot, format, gzip))
        })
    }
}

impl ScrapeService {
    fn respond(&self, snapshot: &Published, format: Format, gzipped: bool) -> Response<Bytes> {
        let mut response = Response::builder()
            .header(header::CONTENT_TYPE, format.content_type())
            .header(header::VARY, "Accept, Accept-Encoding");
        if gzipped {
            response = response.header(header::CONTENT_ENCODING, "gzip");
        }
        let variant = format as usize * 2 + usize::from(gzipped);
        let now = Instant::now();
        let lock = || self.pages.lock().unwrap_or_else(|e| e.into_inner());
        let reused = lock()[variant]
            .as_ref()
            .filter(|(at, _)| now.duration_since(*at) < REUSE)
            .map(|(_, body)| body.clone());
        let body = match reused {
            Some(body) => body,
            // Rendered outside the lock: two workers may render the same variant at once,
            // which costs one render more, never a wait.
            None => match self.render(snapshot, format) {
                Ok(text) => {
                    let body = if gzipped {
                        gzip(text.as_bytes())
                    } else {
                        Bytes::from(text)
                    };
                    lock()[variant] = Some((now, body.clone()));
                    body
                }
                Err(err) => {
                    tracing::error!(reason = %err, "the /metrics page could not be written");
                    let mut failed =
                        Response::new(Bytes::from_static(b"the page could not be written\n"));
                    *failed.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return failed;
                }
            },
        };
        response
            .status(StatusCode::OK)
            .body(body)
            .unwrap_or_else(|_| Response::new(Bytes::new()))
    }
}

/// Level 1: the exposition compresses about 8x at it, and a higher level costs more CPU
/// per scrape than the bytes it saves are worth on a device (BENCHMARKS.md). The reading
/// encoder over a slice, as tonic's gzip uses, so its code is there once.
fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = flate2::read::GzEncoder::new(body, flate2::Compression::fast());
    let mut out = Vec::with_capacity(body.len() / 6);
    // Reading from a slice into a Vec cannot fail.
    let _ = encoder.read_to_end(&mut out);
    Bytes::from(out)
}

/// Whether `Accept-Encoding` lists gzip with a quality above 0.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| {
            let (coding, q) = media_and_q(entry);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// An `Accept` entry's media range and its quality (1 when absent).
fn media_and_q(entry: &str) -> (&str, f32) {
    let mut parts = entry.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    let q = parts
        .filter_map(|p| p.strip_prefix("q="))
        .find_map(|q| q.parse().ok())
        .unwrap_or(1.0);
    (media, q)
}

/// The two exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` ranks `application/openmetrics-text` at least as high as
    /// the text format (as Prometheus' own scrape header does); text otherwise.
    pub fn accepted(headers: &HeaderMap) -> Format {
        let mut open_metrics = 0.0f32;
        let mut text = 0.0f32;
        for entry in headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let (media, q) = media_and_q(entry);
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                open_metrics = open_metrics.max(q);
            } else if media.eq_ignore_ascii_case("text/plain") {
                text = text.max(q);
            }
        }
        if open_metrics > 0.0 && open_metrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Format::Text => TEXT,
            Format::OpenMetrics => OPEN_METRICS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, value.parse().unwrap());
        h
    }

    /// Prometheus' own Accept header gets OpenMetrics; curl's `*/*` and text/plain get
    /// the text format.
    #[test]
    fn negotiates_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::accepted(&accept(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::accepted(&accept("text/plain;version=0.0.4;q=1,*/*;q=0.1")),
            Format::Text
        );
        assert_eq!(Format::accepted(&accept("*/*")), Format::Text);
        assert_eq!(Format::accepted(&HeaderMap::new()), Format::Text);
        let mut gz = HeaderMap::new();
        gz.insert(
            header::ACCEPT_ENCODING,
            "deflate, gzip;q=0.5".parse().unwrap(),
        );
        assert!(accepts_gzip(&gz));
        gz.insert(header::ACCEPT_ENCODING, "gzip;q=0".parse().unwrap());
        assert!(!accepts_gzip(&gz));
    }
}

//! The `/metrics` page's text, written by the `prometheus-client` crate: the Prometheus text
//! format 0.0.4 (`encoding::prometheus_text`: node_exporter's default, what `promtool check
//! metrics` and curl users read) or OpenMetrics 1.0 (`encoding::text`: what Prometheus asks
//! for). The series are [`crate::series`]'s; this module adapts its [`Sink`] to the crate's
//! [`Collector`], and knows nothing of names.
//!
//! Why this crate: it is the Prometheus project's own Rust client, and since 0.26 it writes
//! both text formats through one seam (the `DescriptorEncoder` a `Collector` is handed does
//! not say which), with the escaping of label values, counters' `_total`, `# EOF`, and Go's
//! spelling of `le` in the text format. The remote_write push does not use it (it writes
//! protobuf from the same series, daemon/push.rs).
//!
//! The seam: the crate writes a family as a descriptor (HELP and TYPE), then its samples
//! through the `MetricEncoder` the descriptor returned, which borrows the encoder until the
//! family is done; [`series::collect`] hands families over one after another through
//! [`Sink::family`] and [`Sink::sample`]. So `Families` keeps the current family's samples
//! (their text in one reused string) and writes the family when the next one starts. A
//! histogram's samples come as series/mod.rs builds them (cumulative `_bucket`s with `le`, `_sum`,
//! `_count`) and go to the crate as one histogram per label set.
//!
//! Names: series/mod.rs names a counter with its `_total`, as node_exporter does; the crate wants
//! the name without it and adds it back (to the samples in OpenMetrics, to HELP and TYPE as
//! well in the text format). A counter whose name did not end in `_total` could not be an
//! OpenMetrics counter: it is declared `unknown` (`untyped` in the text format) under its own
//! name. series/mod.rs has none (its tests check that every counter's name ends in `_total`).
//!
//! What the crate writes differently from the hand-written encoder this replaced (Prometheus
//! reads both alike, except the first OpenMetrics point for Prometheus 2.x):
//! - OpenMetrics: `le` as an OpenMetrics float (`1.0`, `5.0`, `10.0`; the other bounds as
//!   before), as client_golang writes it there; Prometheus 3 stores `le` that way from either
//!   format, Prometheus 2 stores what it reads, so three of the seventeen bucket series of a
//!   Prometheus 2 scraping OpenMetrics get a new `le`. The text format keeps Go's `1`.
//! - OpenMetrics: a histogram's `_sum` and `_count` come before its buckets, and `le` is the
//!   bucket's first label; infinite values are `inf` and `-inf` (the text format: `+Inf`,
//!   `-Inf`, as before).
//! - Both: a value that is not an integer is the shortest that reads back the same (dtoa), in
//!   exponent notation where that is shorter (`1e-7`, not `0.0000001`), and a histogram's
//!   `_sum` has a `.0` when whole. Integers are written as before, and from 1e15 to 2^63 with
//!   all their digits (`1152921504606846976`, where Rust's float formatting wrote
//!   `1152921504606847000`; the same number either way).

use std::{
    fmt,
    ops::Range,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet, prometheus_text, text},
    metrics::MetricType,
    registry::Registry,
};

use super::scrape::Format;
use crate::{
    health::{Statuses, Verdict},
    proto::metrics::Snapshot,
    rpc_stats::RpcStats,
    sampler::LiveSample,
    series::{self, DaemonStats, Sink, Sources, Type},
};

/// Why a page could not be written. Not outside input: series/mod.rs's families and the crate
/// disagreeing, which the tests would show.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the exposition encoder failed")]
    Write(#[from] fmt::Error),
    #[error("family {family}: a {kind:?} family has no `{suffix}` samples")]
    Suffix {
        family: String,
        kind: Type,
        suffix: String,
    },
    #[error("family {family}: bucket bound le=\"{le}\" is not a number")]
    Bound { family: String, le: String },
}

/// What one page shows: what [`series::collect`] reads, owned, because the crate's
/// `Registry` keeps its collectors for `'static`.
pub struct Exposition {
    pub snapshot: Arc<Snapshot>,
    /// What the scrape read live (sampler/live.rs); `None`: the snapshot alone.
    pub live: Option<Box<LiveSample>>,
    pub rpc: Arc<RpcStats>,
    pub health: Statuses,
    pub checks: Arc<[Verdict]>,
    pub daemon: Arc<DaemonStats>,
    pub restarts: Vec<(&'static str, u64)>,
    pub now: SystemTime,
}

/// The page in `format`.
pub fn encode(exposition: Exposition, format: Format) -> Result<String, EncodeError> {
    write(format, move |sink| {
        let e = &exposition;
        series::collect(
            &Sources {
                snapshot: &e.snapshot,
                live: e.live.as_deref(),
                rpc: &e.rpc,
                health: &e.health,
                checks: &e.checks,
                daemon: &e.daemon,
                restarts: &e.restarts,
                now: e.now,
            },
            sink,
        );
    })
}

/// `format`'s text of the families `feed` hands its sink.
fn write<F>(format: Format, feed: F) -> Result<String, EncodeError>
where
    F: Fn(&mut dyn Sink) + Send + Sync + 'static,
{
    let collector = Arc::new(Page {
        feed,
        format,
        error: Mutex::new(None),
    });
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector.clone()));
    // Sized from the last page, so the text is not copied into a buffer twice its size
    // halfway through (a tenth of a render's time went on that and its page faults).
    static LAST: AtomicUsize = AtomicUsize::new(64 * 1024);
    let last = LAST.load(Ordering::Relaxed);
    let mut out = String::with_capacity(last + last / 16);
    let written = match format {
        Format::Text => prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => text::encode(&mut out, &registry),
    };
    let error = collector
        .error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match error {
        Some(error) => Err(error),
        None => written
            .map(|()| {
                LAST.store(out.len(), Ordering::Relaxed);
                out
            })
            .map_err(EncodeError::from),
    }
}

/// The one collector of a page's registry.
struct Page<F> {
    feed: F,
    format: Format,
    /// Why [`Collector::encode`] failed, which its `fmt::Error` cannot say.
    error: Mutex<Option<EncodeError>>,
}

impl<F> fmt::Debug for Page<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("format", &self.format)
            .finish()
    }
}

impl<F> Collector for Page<F>
where
    F: Fn(&mut dyn Sink) + Send + Sync + 'static,
{
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut families = Families::new(encoder, self.format == Format::OpenMetrics);
        (self.feed)(&mut families);
        families.finish().map_err(|error| {
            *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
            fmt::Error
        })
    }
}

/// One sample of the current family: ranges into [`Families::text`] and
/// [`Families::labels`].
struct Sample {
    suffix: Range<usize>,
    labels: Range<usize>,
    value: f64,
}

/// The [`Sink`] that writes families to the crate's encoder, one family behind.
struct Families<'a> {
    out: DescriptorEncoder<'a>,
    /// OpenMetrics: the crate writes HELP as given, so it is escaped here (the text format's
    /// encoder escapes it itself).
    escape_help: bool,
    /// The current family; `None` before the first.
    kind: Option<Type>,
    name: String,
    help: String,
    samples: Vec<Sample>,
    /// Each sample's label names and values, as ranges into `text`.
    labels: Vec<(Range<usize>, Range<usize>)>,
    /// The samples' suffixes, label names and values, one after another.
    text: String,
    /// The first failure; what follows it is not written.
    error: Option<EncodeError>,
}

impl<'a> Families<'a> {
    fn new(out: DescriptorEncoder<'a>, escape_help: bool) -> Families<'a> {
        Families {
            out,
            escape_help,
            kind: None,
            name: String::with_capacity(64),
            help: String::with_capacity(128),
            samples: Vec::with_capacity(256),
            labels: Vec::with_capacity(1024),
            text: String::with_capacity(16 * 1024),
            error: None,
        }
    }

    /// Writes the last family.
    fn finish(mut self) -> Result<(), EncodeError> {
        self.flush();
        self.error.map_or(Ok(()), Err)
    }

    /// Writes the current family, if any, and forgets its samples.
    fn flush(&mut self) {
        if self.error.is_none()
            && let Some(kind) = self.kind
            && let Err(error) = self.write(kind)
        {
            self.error = Some(error);
        }
        self.samples.clear();
        self.labels.clear();
        self.text.clear();
    }

    fn write(&mut self, kind: Type) -> Result<(), EncodeError> {
        let Families {
            out,
            name,
            help,
            samples,
            labels,
            text,
            ..
        } = self;
        let (family, metric_type) = match kind {
            Type::Counter => match name.strip_suffix("_total") {
                Some(family) => (family, MetricType::Counter),
                None => (name.as_str(), MetricType::Unknown),
            },
            Type::Gauge => (name.as_str(), MetricType::Gauge),
            Type::Untyped => (name.as_str(), MetricType::Unknown),
            Type::Histogram => (name.as_str(), MetricType::Histogram),
        };
        let mut metric = out.encode_descriptor(family, help, None, metric_type)?;
        let stored = Stored { text, labels };
        if kind == Type::Histogram {
            return histograms(&mut metric, name, samples, stored);
        }
        let mut set: Vec<(&str, &str)> = Vec::with_capacity(16);
        for sample in samples.iter() {
            let suffix = stored.suffix(sample);
            if !suffix.is_empty() {
                return Err(EncodeError::Suffix {
                    family: name.clone(),
                    kind,
                    suffix: suffix.to_owned(),
                });
            }
            set.clear();
            set.extend(stored.labels(sample));
            let set = set.as_slice();
            let mut series = metric.encode_family(&set)?;
            let v = sample.value;
            match metric_type {
                MetricType::Counter if integer(v) && v >= 0.0 => {
                    series.encode_counter::<NoLabelSet, _, f64>(&(v as i64 as u64), None)?
                }
                MetricType::Counter => series.encode_counter::<NoLabelSet, _, f64>(&v, None)?,
                _ if integer(v) => series.encode_gauge(&(v as i64))?,
                _ => series.encode_gauge(&v)?,
            }
        }
        Ok(())
    }
}

impl Sink for Families<'_> {
    fn family(&mut self, name: &str, help: &str, kind: Type) {
        self.flush();
        self.kind = Some(kind);
        self.name.clear();
        self.name.push_str(name);
        self.help.clear();
        if self.escape_help && help.contains(['\\', '\n']) {
            for c in help.chars() {
                match c {
                    '\\' => self.help.push_str("\\\\"),
                    '\n' => self.help.push_str("\\n"),
                    c => self.help.push(c),
                }
            }
        } else {
            self.help.push_str(help);
        }
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        if self.error.is_some() {
            return;
        }
        let text = &mut self.text;
        let mut push = |s: &str| {
            let start = text.len();
            text.push_str(s);
            start..text.len()
        };
        let suffix = push(suffix);
        let first = self.labels.len();
        for (name, value) in labels {
            let name = push(name);
            let value = push(value);
            self.labels.push((name, value));
        }
        self.samples.push(Sample {
            suffix,
            labels: first..self.labels.len(),
            value,
        });
    }
}

/// A family's stored sample text.
#[derive(Clone, Copy)]
struct Stored<'t> {
    text: &'t str,
    labels: &'t [(Range<usize>, Range<usize>)],
}

impl<'t> Stored<'t> {
    fn suffix(self, sample: &Sample) -> &'t str {
        &self.text[sample.suffix.clone()]
    }

    fn labels(self, sample: &Sample) -> impl Iterator<Item = (&'t str, &'t str)> + use<'t> {
        self.labels[sample.labels.clone()]
            .iter()
            .map(move |(k, v)| (&self.text[k.clone()], &self.text[v.clone()]))
    }
}

/// Whether `v` is written as an integer, without the `.0` the crate gives a float: the
/// hand-written encoder did so below 1e15; an `i64` holds every integer below 2^63 exactly.
fn integer(v: f64) -> bool {
    v.fract() == 0.0 && v.abs() < 9_223_372_036_854_775_808.0
}

/// One histogram series being gathered: its labels (all but `le`), the per-bucket counts
/// (the crate adds them up again), `_sum` and `_count`.
#[derive(Default)]
struct Histogram<'t> {
    labels: Vec<(&'t str, &'t str)>,
    buckets: Vec<(f64, u64)>,
    cumulative: u64,
    sum: f64,
    count: Option<u64>,
}

impl Histogram<'_> {
    fn write(&mut self, metric: &mut MetricEncoder) -> Result<(), EncodeError> {
        let set = self.labels.as_slice();
        metric.encode_family(&set)?.encode_histogram::<NoLabelSet>(
            self.sum,
            self.count.unwrap_or(self.cumulative),
            &self.buckets,
            None,
        )?;
        self.labels.clear();
        self.buckets.clear();
        (self.cumulative, self.sum, self.count) = (0, 0.0, None);
        Ok(())
    }
}

/// A histogram family's samples, series by series (a series ends where the labels other
/// than `le` change).
fn histograms(
    metric: &mut MetricEncoder,
    family: &str,
    samples: &[Sample],
    stored: Stored<'_>,
) -> Result<(), EncodeError> {
    let mut series = Histogram::default();
    for (i, sample) in samples.iter().enumerate() {
        let rest = || stored.labels(sample).filter(|&(k, _)| k != "le");
        if i > 0 && !series.labels.iter().copied().eq(rest()) {
            series.write(metric)?;
        }
        if series.labels.is_empty() {
            series.labels.extend(rest());
        }
        let le = stored.labels(sample).find(|&(k, _)| k == "le");
        match (stored.suffix(sample), le) {
            ("_bucket", le) => {
                let le = le.map_or("", |(_, le)| le);
                let bound = le.parse().map_err(|_| EncodeError::Bound {
                    family: family.to_owned(),
                    le: le.to_owned(),
                })?;
                let total = sample.value as u64;
                series
                    .buckets
                    .push((bound, total.saturating_sub(series.cumulative)));
                series.cumulative = total;
            }
            ("_sum", _) => series.sum = sample.value,
            ("_count", _) => series.count = Some(sample.value as u64),
            (suffix, _) => {
                return Err(EncodeError::Suffix {
                    family: family.to_owned(),
                    kind: Type::Histogram,
                    suffix: suffix.to_owned(),
                });
            }
        }
    }
    if !samples.is_empty() {
        series.write(metric)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::atomic::Ordering::Relaxed,
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::proto::{
        health::health_check_response::ServingStatus,
        metrics::{
            Filesystem, HwmonTemp, KernelStat, MemInfoField, OsRelease, Pressure, ThermalZone,
            Uname,
        },
    };

    /// series/mod.rs's test snapshot with every family present and the awkward values: a label
    /// value with a quote, a backslash and a newline, NaN and infinities, values past 1e15,
    /// tiny and inexact fractions, RPC calls in the histogram.
    fn fixture() -> Exposition {
        let mut snapshot = crate::series::tests::snapshot();
        snapshot.filesystems.push(Filesystem {
            mount_point: "/mnt/a \"b\" c\\d\ne".into(),
            device: "//nas/x".into(),
            fs_type: "cifs".into(),
            total_bytes: 1 << 53,
            available_bytes: u64::MAX,
            read_only: true,
            ..Filesystem::default()
        });
        snapshot.meminfo.push(MemInfoField {
            name: "HugePages_Total".into(),
            value: 0,
            bytes: false,
        });
        snapshot.kernel = Some(KernelStat {
            context_switches: 123_456_789_012,
            interrupts: 5,
            forks: 6,
            procs_running: 2,
            procs_blocked: 0,
        });
        snapshot.pressure = Some(Pressure {
            cpu_some_micros: 1,
            memory_some_micros: 1_500_000,
            memory_full_micros: 123_456_789,
            io_some_micros: 0,
            io_full_micros: 7,
        });
        let coretemp = |sensor: &str, celsius, critical_celsius| HwmonTemp {
            chip: "platform_coretemp_0".into(),
            chip_name: "coretemp".into(),
            sensor: sensor.into(),
            celsius,
            critical_celsius,
            max_celsius: None,
        };
        snapshot.hwmon = vec![
            coretemp("temp1", 45.5, Some(100.0)),
            coretemp("temp2", f64::NAN, Some(f64::INFINITY)),
        ];
        snapshot.thermal_zones = vec![
            ThermalZone {
                zone: "0".into(),
                r#type: "x86_pkg_temp".into(),
                celsius: -0.001,
            },
            ThermalZone {
                zone: "1".into(),
                r#type: "acpitz".into(),
                celsius: f64::NEG_INFINITY,
            },
        ];
        snapshot.uname = Some(Uname {
            sysname: "Linux".into(),
            release: "6.1.0-18-amd64".into(),
            version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)".into(),
            machine: "x86_64".into(),
            domainname: "(none)".into(),
        });
        snapshot.os_release = Some(OsRelease {
            id: "debian".into(),
            name: "Debian GNU/Linux".into(),
            pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
            version: "12 (bookworm)".into(),
            version_id: "12".into(),
            version_codename: "bookworm".into(),
            ..OsRelease::default()
        });
        if let Some(cpu) = snapshot.cpu.as_mut() {
            cpu.load_5 = 1e-7;
            cpu.load_15 = 0.1 + 0.2;
        }
        if let Some(p) = snapshot.process.as_mut() {
            p.virtual_bytes = 1 << 60;
            p.start_time_unix_secs = 1_700_000_000;
        }
        let rpc = RpcStats::new();
        let echo = rpc.method("/vitals.echo.v1.Echo/Echo");
        echo.start();
        echo.finish(tonic::Code::Ok, Duration::from_micros(300));
        echo.start();
        echo.finish(tonic::Code::DeadlineExceeded, Duration::from_secs(20));
        let mut health = BTreeMap::new();
        health.insert(String::new(), ServingStatus::Serving);
        health.insert(crate::methods::ECHO.to_owned(), ServingStatus::NotServing);
        let daemon = DaemonStats::default();
        daemon.cert_not_after.store(1_800_000_000, Relaxed);
        daemon.issue.enabled.store(1, Relaxed);
        daemon.push.enabled.store(1, Relaxed);
        daemon.push.samples_sent.store(42, Relaxed);
        Exposition {
            snapshot: Arc::new(snapshot),
            live: None,
            rpc: Arc::new(rpc),
            health: Arc::new(health),
            checks: Arc::new([Verdict {
                check: crate::health::SAMPLE_FRESH,
                subject: String::new(),
                failure: Some("stale metrics".into()),
            }]),
            daemon: Arc::new(daemon),
            restarts: vec![("push", 1), ("sampler", 3)],
            now: UNIX_EPOCH + Duration::from_millis(1_700_000_003_250),
        }
    }

    /// Both formats write HELP and TYPE once per family; OpenMetrics names counter
    /// families without `_total` and ends with `# EOF`; label values are escaped; integers
    /// have no fraction and infinity is `+Inf` in the text format (OpenMetrics: `inf`, which
    /// its grammar allows and Prometheus reads).
    #[test]
    fn encodes_both_formats() {
        for format in [Format::Text, Format::OpenMetrics] {
            let out = write(format, |sink| {
                sink.family("x_total", "An x.", Type::Counter);
                sink.sample("", &[("a", "q\"\\\n")], 3.0);
                sink.family("y", "A y.", Type::Gauge);
                sink.sample("", &[], 0.25);
                sink.sample("", &[], f64::INFINITY);
            })
            .unwrap();
            let (family, inf) = if format == Format::Text {
                ("x_total", "+Inf")
            } else {
                ("x", "inf")
            };
            let mut want = format!(
                "# HELP {family} An x.\n# TYPE {family} counter\nx_total{{a=\"q\\\"\\\\\\n\"}} 3\n# HELP y A y.\n# TYPE y gauge\ny 0.25\ny {inf}\n"
            );
            if format == Format::OpenMetrics {
                want.push_str("# EOF\n");
            }
            assert_eq!(out, want);
            assert_eq!(inf.parse::<f64>(), Ok(f64::INFINITY));
        }
    }

    /// The hand-written encoder this module replaced, its `Sink` as it was: the reference the
    /// crate's pages are compared with.
    struct Reference {
        out: String,
        open_metrics: bool,
        family: String,
    }

    impl Reference {
        fn page(format: Format) -> String {
            let mut page = Reference {
                out: String::new(),
                open_metrics: format == Format::OpenMetrics,
                family: String::new(),
            };
            let e = fixture();
            series::collect(
                &Sources {
                    snapshot: &e.snapshot,
                    live: None,
                    rpc: &e.rpc,
                    health: &e.health,
                    checks: &e.checks,
                    daemon: &e.daemon,
                    restarts: &e.restarts,
                    now: e.now,
                },
                &mut page,
            );
            if page.open_metrics {
                page.out.push_str("# EOF\n");
            }
            page.out
        }

        fn escape(out: &mut String, text: &str, quote: bool) {
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '"' if quote => out.push_str("\\\""),
                    c => out.push(c),
                }
            }
        }
    }

    impl Sink for Reference {
        fn family(&mut self, name: &str, help: &str, kind: Type) {
            self.family = name.to_owned();
            let family = match (self.open_metrics, kind) {
                (true, Type::Counter) => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            let kind = match kind {
                Type::Counter => "counter",
                Type::Gauge => "gauge",
                Type::Untyped if self.open_metrics => "unknown",
                Type::Untyped => "untyped",
                Type::Histogram => "histogram",
            };
            self.out.push_str(&format!("# HELP {family} "));
            Reference::escape(&mut self.out, help, false);
            self.out.push_str(&format!("\n# TYPE {family} {kind}\n"));
        }

        fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], v: f64) {
            self.out.push_str(&self.family);
            self.out.push_str(suffix);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (name, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.out.push_str(&format!("{name}=\""));
                    Reference::escape(&mut self.out, value, true);
                    self.out.push('"');
                }
                self.out.push('}');
            }
            let value = if v.is_nan() {
                "NaN".to_owned()
            } else if v.is_infinite() {
                (if v > 0.0 { "+Inf" } else { "-Inf" }).to_owned()
            } else if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{}", v as i64)
            } else {
                format!("{v}")
            };
            self.out.push_str(&format!(" {value}\n"));
        }
    }

    /// A page read back: each sample's name and labels (sorted, `le` as the number it
    /// spells) with its value, and the HELP and TYPE lines in order.
    #[derive(Debug)]
    struct Read {
        samples: BTreeMap<String, f64>,
        meta: Vec<String>,
    }

    fn read(page: &str) -> Read {
        let mut samples = BTreeMap::new();
        let mut meta = Vec::new();
        for line in page.lines() {
            if line == "# EOF" {
                continue;
            }
            if line.starts_with('#') {
                meta.push(line.to_owned());
                continue;
            }
            let end = line.find(['{', ' ']).unwrap();
            let (name, mut rest) = line.split_at(end);
            let mut labels = Vec::new();
            if let Some(inner) = rest.strip_prefix('{') {
                rest = inner;
                while let Some((key, after)) = rest.split_once("=\"") {
                    // The value ends at the first quote not escaped.
                    let mut escaped = false;
                    let close = after
                        .char_indices()
                        .find(|&(_, c)| {
                            let end = c == '"' && !escaped;
                            escaped = c == '\\' && !escaped;
                            end
                        })
                        .unwrap()
                        .0;
                    let mut value = after[..close].to_owned();
                    if key == "le" {
                        value = format!("{:?}", value.parse::<f64>().unwrap());
                    }
                    labels.push(format!("{key}={value}"));
                    rest = after[close + 1..].trim_start_matches(',');
                    if let Some(after) = rest.strip_prefix('}') {
                        rest = after;
                        break;
                    }
                }
            }
            labels.sort();
            let key = format!("{name}{{{}}}", labels.join(","));
            let value: f64 = rest
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(samples.insert(key, value).is_none(), "twice: {line}");
        }
        Read { samples, meta }
    }

    /// The same values, NaN being NaN.
    fn same_values(a: &Read, b: &Read) {
        assert_eq!(
            a.samples.keys().collect::<Vec<_>>(),
            b.samples.keys().collect::<Vec<_>>()
        );
        for (key, x) in &a.samples {
            let y = b.samples[key];
            assert!(x == &y || (x.is_nan() && y.is_nan()), "{key}: {x} and {y}");
        }
    }

    /// The crate's pages say what the hand-written encoder's said, in both formats: the
    /// same samples (names, labels, escaped values, `le` bounds) with the same values (NaN,
    /// infinities, fractions, integers past 1e15), the same HELP and TYPE lines in the same
    /// order, and both formats the same samples as each other.
    #[test]
    fn pages_read_as_before() {
        let text = read(&encode(fixture(), Format::Text).unwrap());
        let open = encode(fixture(), Format::OpenMetrics).unwrap();
        assert!(open.ends_with("\n# EOF\n"));
        let open = read(&open);
        for (new, format) in [(&text, Format::Text), (&open, Format::OpenMetrics)] {
            let old = read(&Reference::page(format));
            assert!(old.samples.len() > 250, "{} samples", old.samples.len());
            same_values(new, &old);
            assert_eq!(new.meta, old.meta, "{format:?}");
        }
        same_values(&text, &open);
    }

    /// A counter whose name does not end in `_total` is declared unknown (`untyped` in the
    /// text format) under its own name, not renamed; a histogram is one per label set, its
    /// `_count` as given.
    #[test]
    fn counter_without_total_and_histograms() {
        let feed = |sink: &mut dyn Sink| {
            sink.family("x_seconds", "An x.", Type::Counter);
            sink.sample("", &[], 1.5);
            sink.family("h", "An h.", Type::Histogram);
            for (labels, n) in [(&[][..], 1.0), (&[("m", "a")][..], 3.0)] {
                let mut bucket = labels.to_vec();
                bucket.push(("le", "0.5"));
                sink.sample("_bucket", &bucket, n - 1.0);
                bucket.pop();
                bucket.push(("le", "+Inf"));
                sink.sample("_bucket", &bucket, n);
                sink.sample("_sum", labels, 0.75);
                sink.sample("_count", labels, n);
            }
        };
        let text = write(Format::Text, feed).unwrap();
        assert_eq!(
            text,
            "# HELP x_seconds An x.\n# TYPE x_seconds untyped\nx_seconds 1.5\n\
             # HELP h An h.\n# TYPE h histogram\n\
             h_bucket{le=\"0.5\"} 0\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.75\nh_count 1\n\
             h_bucket{m=\"a\",le=\"0.5\"} 2\nh_bucket{m=\"a\",le=\"+Inf\"} 3\nh_sum{m=\"a\"} 0.75\nh_count{m=\"a\"} 3\n"
        );
        let open = write(Format::OpenMetrics, feed).unwrap();
        assert!(
            open.starts_with("# HELP x_seconds An x.\n# TYPE x_seconds unknown\nx_seconds 1.5\n")
        );
        same_values(&read(&text), &read(&open));
    }

    /// A sample suffix its family's type cannot have fails the page with the family named,
    /// rather than writing a wrong one.
    #[test]
    fn impossible_suffix_fails() {
        let err = write(Format::Text, |sink| {
            sink.family("g", "A g.", Type::Gauge);
            sink.sample("_sum", &[], 1.0);
        })
        .unwrap_err();
        assert!(
            matches!(err, EncodeError::Suffix { ref family, .. } if family == "g"),
            "{err}"
        );
    }

    /// HELP is escaped in both formats (the crate's OpenMetrics encoder writes it as given).
    #[test]
    fn help_is_escaped() {
        for format in [Format::Text, Format::OpenMetrics] {
            let page = write(format, |sink| {
                sink.family("g", "a\\b\nc", Type::Gauge);
                sink.sample("", &[], 1.0);
            })
            .unwrap();
            assert!(page.starts_with("# HELP g a\\\\b\\nc\n"), "{page}");
        }
    }
}

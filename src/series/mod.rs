//! The Prometheus series the scrape (`GET /metrics`) and the remote_write push both
//! produce, built in one place: [`collect`] walks the sampler's snapshot, the RPC
//! counters, the health statuses and the daemon's own counters, and hands every family
//! and sample to a [`Sink`]. The text encoder (service/exposition.rs, which hands them to
//! prometheus-client a family at a time) and the remote_write encoder (daemon/push.rs) are
//! sinks, so nothing is built twice and no list of every series is allocated.
//!
//! Names are node_exporter's for the device (so its dashboards and the node-mixin alerts
//! work unchanged), go-grpc-prometheus's for the RPCs (`grpc_server_*`), the Prometheus
//! client's `process_*` for the daemon itself, and `vitals_*` for what is ours.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    health::Verdict,
    methods::{self, Kind},
    proto::{health::health_check_response::ServingStatus, metrics::Snapshot},
    rpc_stats::RpcStats,
    sampler::LiveSample,
};

mod node;

/// A family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Its name ends in `_total`.
    Counter,
    Gauge,
    /// node_exporter's untyped families (vmstat, netstat, textfile ones without TYPE);
    /// OpenMetrics' `unknown`.
    Untyped,
    /// Its samples are `_bucket` (with `le`), `_sum` and `_count`.
    Histogram,
}

/// Where [`collect`] puts what it finds. Every sample belongs to the family named last.
pub trait Sink {
    fn family(&mut self, name: &str, help: &str, kind: Type);
    /// A sample of the current family: its name is the family's plus `suffix`.
    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64);
}

/// Counters and gauges the daemon keeps about itself (reloads, secret pulls, the
/// certificate, the push), shared by the daemon that updates them and the sinks.
#[derive(Debug, Default)]
pub struct DaemonStats {
    /// The server certificate's notAfter in Unix seconds; 0 when unknown.
    pub cert_not_after: AtomicU64,
    pub reloads_applied: AtomicU64,
    pub reloads_rejected: AtomicU64,
    /// 1 when the last reload was applied (or none was tried), 0 when it was rejected.
    pub last_reload_ok: AtomicU64,
    pub secret_pulls_ok: AtomicU64,
    pub secret_pulls_failed: AtomicU64,
    pub push: PushStats,
    pub issue: IssueStats,
}

/// What certificate renewal (`[tls.issue]`) has done; all zero without it.
#[derive(Debug, Default)]
pub struct IssueStats {
    /// 1 when `[tls.issue]` is configured.
    pub enabled: AtomicU64,
    /// Unix seconds of the last certificate the pki engine signed (0: none since start).
    pub last_success: AtomicU64,
    /// 1 when the last attempt got a certificate (or none has been made yet), 0 when it failed.
    pub last_ok: AtomicU64,
    /// Attempts that failed (each is retried with backoff).
    pub failures: AtomicU64,
}

/// What the remote_write push has done; all zero when no push is configured.
#[derive(Debug, Default)]
pub struct PushStats {
    /// 1 when a push URL is configured.
    pub enabled: AtomicU64,
    pub samples_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    /// Pushes that failed and will be retried (5xx, 429, no connection, timeouts).
    pub retries: AtomicU64,
    /// Samples dropped because the receiver refused them for good (another 4xx).
    pub samples_rejected: AtomicU64,
    /// Samples dropped, oldest first, because the buffer was full.
    pub samples_dropped: AtomicU64,
    pub buffered_samples: AtomicU64,
    pub buffered_bytes: AtomicU64,
    /// Pushes waiting (each one interval's samples).
    pub buffered_batches: AtomicU64,
    /// Unix seconds of the last push the receiver accepted.
    pub last_success: AtomicU64,
}

/// What [`collect`] reads.
pub struct Sources<'a> {
    /// The sampler's last snapshot (its `rpc` part is not read).
    pub snapshot: &'a Snapshot,
    /// What was read at this scrape or push (sampler/live.rs): its counters replace the
    /// snapshot's, and node_exporter's other collectors come from it. `None`: the
    /// snapshot's values only.
    pub live: Option<&'a LiveSample>,
    pub rpc: &'a RpcStats,
    pub health: &'a BTreeMap<String, ServingStatus>,
    /// Each readiness check's verdict on the last sample judged.
    pub checks: &'a [Verdict],
    pub daemon: &'a DaemonStats,
    /// How often each task was run again after a panic ([`crate::supervise::restarts`]).
    pub restarts: &'a [(&'static str, u64)],
    pub now: SystemTime,
}

/// go-grpc-prometheus's `grpc_code` values (Go's `codes.Code.String()`), by number. One
/// string, not an array of them: an array of `&str` is pointers, each a relocation in the
/// position-independent binary (docs/arm.md).
const GO_CODES: &str = "OK Canceled Unknown InvalidArgument DeadlineExceeded NotFound \
    AlreadyExists PermissionDenied ResourceExhausted FailedPrecondition Aborted OutOfRange \
    Unimplemented Internal Unavailable DataLoss Unauthenticated";

/// `le` of each latency bucket of [`BUCKETS_MICROS`] in seconds, then `+Inf`.
const LE: &str = "0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 \
    2.5 5 10 +Inf";

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One family with one unlabelled sample.
fn single(sink: &mut dyn Sink, name: &str, help: &str, kind: Type, value: f64) {
    sink.family(name, help, kind);
    sink.sample("", &[], value);
}

/// Every family; see the module docs.
pub fn collect(s: &Sources<'_>, sink: &mut dyn Sink) {
    match s.live {
        // The textfile's families come last, after every name of ours they may not reuse.
        Some(live) => {
            let mut names = node::Names::new(sink, live);
            node(s, &mut names);
            node::live(live, &mut names);
            process(s.snapshot, s.live, &mut names);
            grpc(s.rpc, &mut names);
            vitals(s, &mut names);
            node::textfile(live, names);
        }
        None => {
            node(s, sink);
            process(s.snapshot, None, sink);
            grpc(s.rpc, sink);
            vitals(s, sink);
        }
    }
}

fn node(s: &Sources<'_>, sink: &mut dyn Sink) {
    let snap = s.snapshot;
    let now = secs(s.now);
    if let Some(host) = &snap.host {
        single(
            sink,
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            Type::Gauge,
            host.boot_time_unix_secs as f64,
        );
    }
    single(
        sink,
        "node_time_seconds",
        "System time in seconds since epoch (1970).",
        Type::Gauge,
        now,
    );
    let cpu_times = s.live.map_or(&snap.cpu_times, |l| &l.cpu_times);
    if !cpu_times.is_empty() {
        sink.family(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            Type::Counter,
        );
        for t in cpu_times {
            let cpu = t.cpu.strip_prefix("cpu").unwrap_or(&t.cpu);
            for (mode, v) in [
                ("idle", t.idle),
                ("iowait", t.iowait),
                ("irq", t.irq),
                ("nice", t.nice),
                ("softirq", t.softirq),
                ("steal", t.steal),
                ("system", t.system),
                ("user", t.user),
            ] {
                sink.sample("", &[("cpu", cpu), ("mode", mode)], v);
            }
        }
        // The kernel counts guest time inside user (and guest_nice inside nice);
        // node_exporter reports it apart as well.
        sink.family(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            Type::Counter,
        );
        for t in cpu_times {
            let cpu = t.cpu.strip_prefix("cpu").unwrap_or(&t.cpu);
            sink.sample("", &[("cpu", cpu), ("mode", "nice")], t.guest_nice);
            sink.sample("", &[("cpu", cpu), ("mode", "user")], t.guest);
        }
    }
    let kernel = s.live.map_or(snap.kernel.as_ref(), |l| l.kernel.as_ref());
    if let Some(k) = kernel {
        for (name, help, kind, v) in [
            (
                "node_context_switches_total",
                "Total number of context switches.",
                Type::Counter,
                k.context_switches,
            ),
            (
                "node_forks_total",
                "Total number of forks.",
                Type::Counter,
                k.forks,
            ),
            (
                "node_intr_total",
                "Total number of interrupts serviced.",
                Type::Counter,
                k.interrupts,
            ),
            (
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                Type::Gauge,
                k.procs_blocked,
            ),
            (
                "node_procs_running",
                "Number of processes in runnable state.",
                Type::Gauge,
                k.procs_running,
            ),
        ] {
            single(sink, name, help, kind, v as f64);
        }
    }
    let load = match s.live {
        Some(live) => live.load,
        None => snap.cpu.as_ref().map(|c| [c.load_1, c.load_5, c.load_15]),
    };
    if let Some([one, five, fifteen]) = load {
        for (name, help, v) in [
            ("node_load1", "1m load average.", one),
            ("node_load5", "5m load average.", five),
            ("node_load15", "15m load average.", fifteen),
        ] {
            single(sink, name, help, Type::Gauge, v);
        }
    }
    let mut name = String::with_capacity(48);
    let mut help = String::with_capacity(64);
    for field in s.live.map_or(&snap.meminfo, |l| &l.meminfo) {
        name.clear();
        name.push_str("node_memory_");
        name.push_str(&field.name);
        help.clear();
        help.push_str("Memory information field ");
        help.push_str(&field.name);
        if field.bytes {
            name.push_str("_bytes");
            help.push_str("_bytes");
        }
        help.push('.');
        single(sink, &name, &help, Type::Gauge, field.value as f64);
    }
    filesystems(snap, sink);
    if s.live.is_none() {
        networks(snap, sink);
    }
    let pressure = s
        .live
        .map_or(snap.pressure.as_ref(), |l| l.pressure.as_ref());
    if let Some(p) = pressure {
        for (name, help, micros) in [
            (
                "node_pressure_cpu_waiting_seconds_total",
                "Total time in seconds that processes have waited for CPU time",
                p.cpu_some_micros,
            ),
            (
                "node_pressure_io_stalled_seconds_total",
                "Total time in seconds no process could make progress due to IO congestion",
                p.io_full_micros,
            ),
            (
                "node_pressure_io_waiting_seconds_total",
                "Total time in seconds that processes have waited due to IO congestion",
                p.io_some_micros,
            ),
            (
                "node_pressure_memory_stalled_seconds_total",
                "Total time in seconds no process could make progress due to memory congestion",
                p.memory_full_micros,
            ),
            (
                "node_pressure_memory_waiting_seconds_total",
                "Total time in seconds that processes have waited for memory",
                p.memory_some_micros,
            ),
        ] {
            single(sink, name, help, Type::Counter, micros as f64 / 1e6);
        }
    }
    temperatures(snap, sink);
    if let Some(u) = &snap.uname {
        let nodename = snap.host.as_ref().map_or("", |h| h.hostname.as_str());
        sink.family(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            Type::Gauge,
        );
        sink.sample(
            "",
            &[
                ("domainname", &u.domainname),
                ("machine", &u.machine),
                ("nodename", nodename),
                ("release", &u.release),
                ("sysname", &u.sysname),
                ("version", &u.version),
            ],
            1.0,
        );
    }
    if let Some(os) = &snap.os_release {
        sink.family(
            "node_os_info",
            "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
            Type::Gauge,
        );
        sink.sample(
            "",
            &[
                ("build_id", &os.build_id),
                ("id", &os.id),
                ("id_like", &os.id_like),
                ("image_id", &os.image_id),
                ("image_version", &os.image_version),
                ("name", &os.name),
                ("pretty_name", &os.pretty_name),
                ("variant", &os.variant),
                ("variant_id", &os.variant_id),
                ("version", &os.version),
                ("version_codename", &os.version_codename),
                ("version_id", &os.version_id),
            ],
            1.0,
        );
        if let Some(version) = os_version(&os.version_id) {
            sink.family(
                "node_os_version",
                "Metric containing the major.minor part of the OS version.",
                Type::Gauge,
            );
            sink.sample(
                "",
                &[("id", &os.id), ("id_like", &os.id_like), ("name", &os.name)],
                version,
            );
        }
    }
}

/// `major.minor` of an os-release VERSION_ID as a number, as node_exporter reads it.
fn os_version(version_id: &str) -> Option<f64> {
    let mut parts = version_id.split('.');
    let major = parts.next()?;
    let text = match parts.next() {
        Some(minor) => format!("{major}.{minor}"),
        None => major.to_owned(),
    };
    text.parse().ok()
}

fn filesystems(snap: &Snapshot, sink: &mut dyn Sink) {
    if snap.filesystems.is_empty() {
        return;
    }
    // Name and help of each family, one line each: text, not a table of pointers (each a
    // relocation in the position-independent binary; docs/arm.md). The value is chosen by
    // the line's place, below.
    const FAMILIES: &str = "\
        avail_bytes|Filesystem space available to non-root users in bytes.\n\
        device_error|Whether an error occurred while getting statistics for the given device.\n\
        files|Filesystem total file nodes.\n\
        files_free|Filesystem total free file nodes.\n\
        free_bytes|Filesystem free space in bytes.\n\
        readonly|Filesystem read-only status.\n\
        size_bytes|Filesystem size in bytes.";
    let value = |i: usize, f: &crate::proto::metrics::Filesystem| match i {
        0 => f.available_bytes as f64,
        1 => f64::from(u8::from(f.stuck || !f.error.is_empty())),
        2 => f.files as f64,
        3 => f.files_free as f64,
        4 => f.free_bytes as f64,
        5 => f64::from(u8::from(f.read_only)),
        _ => f.total_bytes as f64,
    };
    // A mount point mounted over again (a stacked /dev/shm) is listed twice; the last one
    // is what the path shows, and one series may not appear twice.
    let same = |a: &crate::proto::metrics::Filesystem, b: &crate::proto::metrics::Filesystem| {
        a.mount_point == b.mount_point && a.device == b.device && a.fs_type == b.fs_type
    };
    let shown: Vec<_> = snap
        .filesystems
        .iter()
        .enumerate()
        .filter(|(i, f)| !snap.filesystems[i + 1..].iter().any(|later| same(f, later)))
        .map(|(_, f)| f)
        .collect();
    let mut name = String::with_capacity(40);
    for (i, line) in FAMILIES.lines().enumerate() {
        let (suffix, help) = line.split_once('|').unwrap_or((line, ""));
        name.clear();
        name.push_str("node_filesystem_");
        name.push_str(suffix);
        sink.family(&name, help, Type::Gauge);
        for f in &shown {
            // As node_exporter: a mount that could not be read has only device_error.
            if i != 1 && (f.stuck || !f.error.is_empty()) {
                continue;
            }
            let labels = [
                ("device", f.device.as_str()),
                ("fstype", f.fs_type.as_str()),
                ("mountpoint", f.mount_point.as_str()),
            ];
            sink.sample("", &labels, value(i, f));
        }
    }
}

fn networks(snap: &Snapshot, sink: &mut dyn Sink) {
    if snap.networks.is_empty() {
        return;
    }
    let mut name = String::with_capacity(48);
    let mut help = String::with_capacity(48);
    for (i, field) in "receive_bytes receive_drop receive_errs receive_packets transmit_bytes \
         transmit_drop transmit_errs transmit_packets"
        .split_whitespace()
        .enumerate()
    {
        name.clear();
        name.push_str("node_network_");
        name.push_str(field);
        name.push_str("_total");
        help.clear();
        help.push_str("Network device statistic ");
        help.push_str(field);
        help.push('.');
        sink.family(&name, &help, Type::Counter);
        for n in &snap.networks {
            let value = match i {
                0 => n.rx_bytes,
                1 => n.rx_dropped,
                2 => n.rx_errors,
                3 => n.rx_packets,
                4 => n.tx_bytes,
                5 => n.tx_dropped,
                6 => n.tx_errors,
                _ => n.tx_packets,
            };
            sink.sample("", &[("device", &n.name)], value as f64);
        }
    }
}

fn temperatures(snap: &Snapshot, sink: &mut dyn Sink) {
    if !snap.hwmon.is_empty() {
        sink.family(
            "node_hwmon_chip_names",
            "Annotation metric for human-readable chip names",
            Type::Gauge,
        );
        let mut last = "";
        for t in &snap.hwmon {
            if t.chip != last {
                sink.sample("", &[("chip", &t.chip), ("chip_name", &t.chip_name)], 1.0);
                last = &t.chip;
            }
        }
        type Field = fn(&crate::proto::metrics::HwmonTemp) -> Option<f64>;
        let families: [(&str, &str, Field); 3] = [
            (
                "node_hwmon_temp_celsius",
                "Hardware monitor for temperature (input)",
                |t| Some(t.celsius),
            ),
            (
                "node_hwmon_temp_crit_celsius",
                "Hardware monitor for temperature (crit)",
                |t| t.critical_celsius,
            ),
            (
                "node_hwmon_temp_max_celsius",
                "Hardware monitor for temperature (max)",
                |t| t.max_celsius,
            ),
        ];
        for (name, help, value) in families {
            if snap.hwmon.iter().all(|t| value(t).is_none()) {
                continue;
            }
            sink.family(name, help, Type::Gauge);
            for t in &snap.hwmon {
                if let Some(v) = value(t) {
                    sink.sample("", &[("chip", &t.chip), ("sensor", &t.sensor)], v);
                }
            }
        }
    }
    if !snap.thermal_zones.is_empty() {
        sink.family(
            "node_thermal_zone_temp",
            "Zone temperature in Celsius",
            Type::Gauge,
        );
        for z in &snap.thermal_zones {
            sink.sample("", &[("type", &z.r#type), ("zone", &z.zone)], z.celsius);
        }
    }
}

fn process(snap: &Snapshot, live: Option<&LiveSample>, sink: &mut dyn Sink) {
    let Some(p) = &snap.process else { return };
    let cpu = live
        .and_then(|l| l.process_cpu_seconds)
        .unwrap_or(p.cpu_time_millis as f64 / 1000.0);
    for (name, help, kind, v) in [
        (
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Type::Counter,
            cpu,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            Type::Gauge,
            p.max_fds as f64,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            Type::Gauge,
            p.open_fds as f64,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Type::Gauge,
            p.rss_bytes as f64,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            Type::Gauge,
            p.start_time_unix_secs as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            Type::Gauge,
            p.virtual_bytes as f64,
        ),
    ] {
        single(sink, name, help, kind, v);
    }
}

/// go-grpc-prometheus's `grpc_type` of a method.
fn grpc_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Unary => "unary",
        Kind::ServerStreaming => "server_stream",
        Kind::Bidi => "bidi_stream",
    }
}

/// The grpc_server_* families for every routed method, from 0 before its first call (as
/// go-grpc-prometheus pre-registers them), so a rate starts at the first call. Handled
/// counts are given for OK and for each code that has occurred.
fn grpc(rpc: &RpcStats, sink: &mut dyn Sink) {
    let labels = |m: &'static methods::Method| {
        let method = m.path.rsplit('/').next().unwrap_or_default();
        [
            ("grpc_method", method),
            ("grpc_service", m.service),
            ("grpc_type", grpc_type(m.kind)),
        ]
    };
    let routed = || methods::ALL.iter().zip(rpc.routed());
    sink.family(
        "grpc_server_started_total",
        "Total number of RPCs started on the server.",
        Type::Counter,
    );
    for (m, stats) in routed() {
        sink.sample("", &labels(m), stats.calls() as f64);
    }
    sink.family(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        Type::Counter,
    );
    for (m, stats) in routed() {
        let [a, b, c] = labels(m);
        for ((code, n), name) in stats
            .codes()
            .iter()
            .enumerate()
            .zip(GO_CODES.split_whitespace())
        {
            if code == 0 || *n > 0 {
                sink.sample("", &[("grpc_code", name), a, b, c], *n as f64);
            }
        }
    }
    sink.family(
        "grpc_server_handling_seconds",
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
        Type::Histogram,
    );
    for (m, stats) in routed() {
        let [a, b, c] = labels(m);
        let (buckets, sum_micros) = stats.latency();
        let mut cumulative = 0;
        for (le, n) in LE.split_whitespace().zip(buckets) {
            cumulative += n;
            sink.sample("_bucket", &[a, b, c, ("le", le)], cumulative as f64);
        }
        sink.sample("_sum", &[a, b, c], sum_micros as f64 / 1e6);
        sink.sample("_count", &[a, b, c], cumulative as f64);
    }
}

fn vitals(s: &Sources<'_>, sink: &mut dyn Sink) {
    sink.family(
        "vitals_build_info",
        "vitalsd's version and the target it was built for.",
        Type::Gauge,
    );
    sink.sample(
        "",
        &[
            ("target", env!("VITALS_TARGET")),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    sink.family(
        "vitals_health_serving",
        "1 when health reports SERVING for the service (the empty name is the overall status).",
        Type::Gauge,
    );
    for (service, status) in s.health {
        let serving = *status == ServingStatus::Serving;
        sink.sample("", &[("service", service)], f64::from(u8::from(serving)));
    }
    sink.family(
        "vitals_task_restarts_total",
        "Times a daemon task (push, refresh, files, renewal, checks, sampler) was run again after a panic, and scrapes answered 500 after one.",
        Type::Counter,
    );
    for (task, restarts) in s.restarts {
        sink.sample("", &[("task", task)], *restarts as f64);
    }
    sink.family(
        "vitals_health_check_failing",
        "1 while the readiness check fails (the reason is in the log, in systemd's STATUS and in the gRPC snapshot), 0 while it passes; subject is the disk path or sensor, when the check has several.",
        Type::Gauge,
    );
    for verdict in s.checks {
        let failing = f64::from(u8::from(verdict.failure.is_some()));
        let labels = [
            ("check", verdict.check),
            ("subject", verdict.subject.as_str()),
        ];
        sink.sample("", &labels, failing);
    }
    let d = s.daemon;
    let load = |a: &AtomicU64| a.load(Relaxed) as f64;
    if d.cert_not_after.load(Relaxed) > 0 {
        single(
            sink,
            "vitals_tls_certificate_not_after_seconds",
            "When the server certificate expires (notAfter), in Unix seconds.",
            Type::Gauge,
            load(&d.cert_not_after),
        );
    }
    if d.issue.enabled.load(Relaxed) > 0 {
        single(
            sink,
            "vitals_tls_renewal_last_success_timestamp_seconds",
            "When the pki engine last signed a certificate for this daemon, in Unix seconds (0: not since start).",
            Type::Gauge,
            load(&d.issue.last_success),
        );
        single(
            sink,
            "vitals_tls_renewal_last_attempt_successful",
            "Whether the last certificate issue or renewal attempt succeeded (1 before any).",
            Type::Gauge,
            load(&d.issue.last_ok),
        );
        single(
            sink,
            "vitals_tls_renewal_failures_total",
            "Certificate issue or renewal attempts that failed (each retried with backoff).",
            Type::Counter,
            load(&d.issue.failures),
        );
    }
    if s.snapshot.sampled_at_unix_ms > 0 {
        let sampled = s.snapshot.sampled_at_unix_ms as f64 / 1000.0;
        single(
            sink,
            "vitals_sample_age_seconds",
            "Seconds since the sampler took the device values in this exposition.",
            Type::Gauge,
            (secs(s.now) - sampled).max(0.0),
        );
    }
    sink.family(
        "vitals_reloads_total",
        "Config reloads (SIGHUP), by outcome: applied, or rejected and the previous config kept.",
        Type::Counter,
    );
    sink.sample("", &[("result", "applied")], load(&d.reloads_applied));
    sink.sample("", &[("result", "rejected")], load(&d.reloads_rejected));
    single(
        sink,
        "vitals_config_last_reload_successful",
        "Whether the last config reload was applied (1 before any reload).",
        Type::Gauge,
        load(&d.last_reload_ok),
    );
    sink.family(
        "vitals_secret_pulls_total",
        "Pulls of every referenced secret (at start and at each reload), by outcome.",
        Type::Counter,
    );
    sink.sample("", &[("result", "failed")], load(&d.secret_pulls_failed));
    sink.sample("", &[("result", "ok")], load(&d.secret_pulls_ok));
    let p = &d.push;
    if p.enabled.load(Relaxed) == 0 {
        return;
    }
    for (name, help, kind, v) in [
        (
            "vitals_push_batches_sent_total",
            "remote_write requests the receiver accepted.",
            Type::Counter,
            &p.batches_sent,
        ),
        (
            "vitals_push_buffer_batches",
            "Pushes waiting to be sent, each one interval's samples.",
            Type::Gauge,
            &p.buffered_batches,
        ),
        (
            "vitals_push_buffer_bytes",
            "Bytes of encoded samples waiting to be pushed.",
            Type::Gauge,
            &p.buffered_bytes,
        ),
        (
            "vitals_push_buffer_samples",
            "Samples waiting to be pushed.",
            Type::Gauge,
            &p.buffered_samples,
        ),
        (
            "vitals_push_last_success_timestamp_seconds",
            "When the receiver last accepted a push, in Unix seconds.",
            Type::Gauge,
            &p.last_success,
        ),
        (
            "vitals_push_retries_total",
            "Pushes that failed and are retried (no connection, timeouts, 5xx, 429).",
            Type::Counter,
            &p.retries,
        ),
        (
            "vitals_push_samples_dropped_total",
            "Samples dropped, oldest first, because the push buffer was full.",
            Type::Counter,
            &p.samples_dropped,
        ),
        (
            "vitals_push_samples_rejected_total",
            "Samples dropped because the receiver refused them (a 4xx other than 429).",
            Type::Counter,
            &p.samples_rejected,
        ),
        (
            "vitals_push_samples_sent_total",
            "Samples the receiver accepted.",
            Type::Counter,
            &p.samples_sent,
        ),
    ] {
        single(sink, name, help, kind, load(v));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::metrics::{
        Cpu, CpuTime, Filesystem, Host, MemInfoField, NetworkInterface, Process,
    };

    /// A sink that writes `name{labels} value` lines, for tests.
    #[derive(Default)]
    pub(crate) struct Lines {
        family: String,
        pub kinds: Vec<(String, Type)>,
        pub lines: Vec<String>,
    }

    impl Sink for Lines {
        fn family(&mut self, name: &str, _help: &str, kind: Type) {
            self.family = name.to_owned();
            self.kinds.push((name.to_owned(), kind));
        }
        fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
            let labels: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            self.lines.push(format!(
                "{}{suffix}{{{}}} {value}",
                self.family,
                labels.join(",")
            ));
        }
    }

    pub(crate) fn snapshot() -> Snapshot {
        Snapshot {
            sampled_at_unix_ms: 1_700_000_000_000,
            host: Some(Host {
                hostname: "dev1".into(),
                boot_time_unix_secs: 1_600_000_000,
                ..Host::default()
            }),
            cpu: Some(Cpu {
                load_1: 0.5,
                ..Cpu::default()
            }),
            cpu_times: vec![CpuTime {
                cpu: "cpu0".into(),
                user: 12.5,
                idle: 100.0,
                ..CpuTime::default()
            }],
            meminfo: vec![MemInfoField {
                name: "MemAvailable".into(),
                value: 2048,
                bytes: true,
            }],
            filesystems: vec![Filesystem {
                mount_point: "/".into(),
                device: "/dev/sda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100,
                available_bytes: 40,
                ..Filesystem::default()
            }],
            networks: vec![NetworkInterface {
                name: "eth0".into(),
                rx_bytes: 7,
                tx_dropped: 2,
                ..NetworkInterface::default()
            }],
            process: Some(Process {
                cpu_time_millis: 1500,
                ..Process::default()
            }),
            ..Snapshot::default()
        }
    }

    pub(crate) fn collect_lines(snapshot: &Snapshot, rpc: &RpcStats) -> Lines {
        let mut health = BTreeMap::new();
        health.insert(String::new(), ServingStatus::Serving);
        health.insert(methods::ECHO.to_owned(), ServingStatus::NotServing);
        let daemon = DaemonStats::default();
        daemon.cert_not_after.store(1_800_000_000, Relaxed);
        let checks = [
            Verdict {
                check: crate::health::SAMPLE_FRESH,
                subject: String::new(),
                failure: None,
            },
            Verdict {
                check: crate::health::DISK_FREE,
                subject: "/var".into(),
                failure: Some("filesystem /var has 1.0% free, below 5%".into()),
            },
        ];
        let mut lines = Lines::default();
        collect(
            &Sources {
                snapshot,
                live: None,
                rpc,
                health: &health,
                checks: &checks,
                daemon: &daemon,
                restarts: &[("push", 2)],
                now: UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_003),
            },
            &mut lines,
        );
        lines
    }

    /// node_exporter's names and labels come out of a snapshot: CPU seconds by core and
    /// mode (not percentages), memory, filesystems with device/fstype/mountpoint,
    /// interfaces, process_*, and ours.
    #[test]
    fn node_exporter_names() {
        let lines = collect_lines(&snapshot(), &RpcStats::new()).lines;
        for want in [
            "node_cpu_seconds_total{cpu=0,mode=user} 12.5",
            "node_cpu_seconds_total{cpu=0,mode=idle} 100",
            "node_load1{} 0.5",
            "node_memory_MemAvailable_bytes{} 2048",
            "node_filesystem_avail_bytes{device=/dev/sda1,fstype=ext4,mountpoint=/} 40",
            "node_filesystem_size_bytes{device=/dev/sda1,fstype=ext4,mountpoint=/} 100",
            "node_network_receive_bytes_total{device=eth0} 7",
            "node_network_transmit_drop_total{device=eth0} 2",
            "node_boot_time_seconds{} 1600000000",
            "node_time_seconds{} 1700000003",
            "process_cpu_seconds_total{} 1.5",
            "vitals_health_serving{service=} 1",
            "vitals_health_serving{service=vitals.echo.v1.Echo} 0",
            "vitals_health_check_failing{check=sample_fresh,subject=} 0",
            "vitals_health_check_failing{check=disk_free,subject=/var} 1",
            "vitals_tls_certificate_not_after_seconds{} 1800000000",
            "vitals_sample_age_seconds{} 3",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} in {lines:#?}");
        }
    }

    /// The gRPC families use go-grpc-prometheus's names and labels; the histogram is
    /// cumulative, in seconds, and its count is its +Inf bucket.
    #[test]
    fn grpc_server_families() {
        let rpc = RpcStats::new();
        let echo = rpc.method("/vitals.echo.v1.Echo/Echo");
        echo.start();
        echo.finish(tonic::Code::Ok, std::time::Duration::from_micros(300));
        echo.start();
        echo.finish(
            tonic::Code::DeadlineExceeded,
            std::time::Duration::from_secs(20),
        );
        let lines = collect_lines(&snapshot(), &rpc).lines;
        let labels = "grpc_method=Echo,grpc_service=vitals.echo.v1.Echo,grpc_type=unary";
        for want in [
            format!("grpc_server_started_total{{{labels}}} 2"),
            format!("grpc_server_handled_total{{grpc_code=OK,{labels}}} 1"),
            format!("grpc_server_handled_total{{grpc_code=DeadlineExceeded,{labels}}} 1"),
            format!("grpc_server_handling_seconds_bucket{{{labels},le=0.00025}} 0"),
            format!("grpc_server_handling_seconds_bucket{{{labels},le=0.0005}} 1"),
            format!("grpc_server_handling_seconds_bucket{{{labels},le=10}} 1"),
            format!("grpc_server_handling_seconds_bucket{{{labels},le=+Inf}} 2"),
            format!("grpc_server_handling_seconds_count{{{labels}}} 2"),
            format!("grpc_server_handling_seconds_sum{{{labels}}} 20.0003"),
            "grpc_server_started_total{grpc_method=Watch,grpc_service=grpc.health.v1.Health,grpc_type=server_stream} 0".into(),
        ] {
            assert!(lines.contains(&want), "{want} in {lines:#?}");
        }
    }

    /// A mount listed twice (mounted over again) is one series.
    #[test]
    fn stacked_mounts_are_one_series() {
        let mut snap = snapshot();
        let again = snap.filesystems[0].clone();
        snap.filesystems.push(Filesystem {
            available_bytes: 7,
            ..again
        });
        let lines = collect_lines(&snap, &RpcStats::new()).lines;
        let avail: Vec<_> = lines
            .iter()
            .filter(|l| l.starts_with("node_filesystem_avail_bytes"))
            .collect();
        assert_eq!(
            avail,
            ["node_filesystem_avail_bytes{device=/dev/sda1,fstype=ext4,mountpoint=/} 7"]
        );
    }

    /// The code names and bucket bounds line up with the counters.
    #[test]
    fn code_names_and_bounds() {
        assert_eq!(GO_CODES.split_whitespace().count(), 17);
        assert_eq!(GO_CODES.split_whitespace().nth(4), Some("DeadlineExceeded"));
        assert_eq!(
            LE.split_whitespace().count(),
            crate::rpc_stats::BUCKETS_MICROS.len() + 1
        );
    }

    /// A family is named once, and every counter's name ends in `_total`.
    #[test]
    fn families_are_named_once() {
        let kinds = collect_lines(&snapshot(), &RpcStats::new()).kinds;
        let mut names: Vec<_> = kinds.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a family appears twice");
        for (name, kind) in kinds {
            assert_eq!(
                kind == Type::Counter,
                name.ends_with("_total"),
                "{name} is {kind:?}"
            );
        }
    }
}

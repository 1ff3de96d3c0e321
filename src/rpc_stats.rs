//! Per-method RPC statistics: calls, calls in flight, status codes and a latency histogram.
//!
//! The methods are fixed ([`crate::methods::ALL`], in that order), so recording is an index
//! into a short table and a few relaxed atomic adds; a path the server does not serve is
//! counted under `unknown`, so a hostile client cannot grow the table.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use crate::{
    methods,
    proto::metrics::{
        LatencyBucket, MethodStats as MethodStatsProto, ReasonCount, Server as ServerProto,
        StatusCount,
    },
};

/// Upper bounds of the latency buckets, in microseconds; one more bucket holds the rest.
pub const BUCKETS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The name the statistics use for paths the server does not serve.
pub const UNKNOWN: &str = "unknown";

/// The seventeen gRPC status codes, by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of a gRPC status code, e.g. `DEADLINE_EXCEEDED`.
pub fn code_name(code: tonic::Code) -> &'static str {
    CODES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// Counters of one method.
#[derive(Debug)]
pub struct Method {
    name: &'static str,
    calls: AtomicU64,
    in_flight: AtomicU64,
    codes: [AtomicU64; 17],
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    panics: AtomicU64,
}

impl Method {
    fn new(name: &'static str) -> Method {
        Method {
            name,
            calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            codes: Default::default(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
            panics: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A call started.
    pub fn start(&self) {
        self.calls.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A handler panicked (the call ends as INTERNAL).
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Relaxed);
    }

    /// A call ended with `code` after `latency`.
    pub fn finish(&self, code: tonic::Code, latency: Duration) {
        self.in_flight.fetch_sub(1, Relaxed);
        let index = (code as usize).min(CODES.len() - 1);
        self.codes[index].fetch_add(1, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_MICROS.partition_point(|&le| le < micros);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Calls started.
    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }

    /// Calls ended, by status code number (0 is OK).
    pub fn codes(&self) -> [u64; 17] {
        std::array::from_fn(|i| self.codes[i].load(Relaxed))
    }

    /// Calls ended per latency bucket of [`BUCKETS_MICROS`] (not cumulative; the last is
    /// the rest), and the sum of their latencies in microseconds.
    pub fn latency(&self) -> ([u64; BUCKETS_MICROS.len() + 1], u64) {
        (
            std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            self.sum_micros.load(Relaxed),
        )
    }

    fn snapshot(&self) -> MethodStatsProto {
        let statuses = self
            .codes
            .iter()
            .zip(CODES)
            .map(|(n, code)| (code, n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(code, count)| StatusCount {
                code: code.to_string(),
                count,
            })
            .collect();
        let latency = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| LatencyBucket {
                le_micros: BUCKETS_MICROS.get(i).copied().unwrap_or(0),
                count: n.load(Relaxed),
            })
            .collect();
        MethodStatsProto {
            method: self.name.to_string(),
            calls: self.calls.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            statuses,
            latency,
            latency_sum_micros: self.sum_micros.load(Relaxed),
            panics: self.panics.load(Relaxed),
        }
    }
}

/// Statistics of every method the server routes, plus `unknown`, and the transport's.
#[derive(Debug)]
pub struct RpcStats {
    methods: Vec<Method>,
    pub server: ServerStats,
}

/// Counts by reason, the reasons fixed: one not listed counts as the last, `other`.
#[derive(Debug)]
pub struct Reasons {
    names: &'static [&'static str],
    counts: Box<[AtomicU64]>,
}

impl Reasons {
    fn new(names: &'static [&'static str]) -> Reasons {
        Reasons {
            names,
            counts: names.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn add(&self, reason: &str) {
        let i = self.names.iter().position(|n| *n == reason);
        self.counts[i.unwrap_or(self.names.len() - 1)].fetch_add(1, Relaxed);
    }

    /// The reasons counted so far.
    fn snapshot(&self) -> Vec<ReasonCount> {
        (self.names.iter().zip(&self.counts))
            .map(|(name, n)| (name, n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(name, count)| ReasonCount {
                reason: name.to_string(),
                count,
            })
            .collect()
    }
}

/// Why a TLS handshake failed (`Snapshot.server.handshakes_refused`).
pub const HANDSHAKE_REASONS: &[&str] = &[
    "unknown CA",
    "expired",
    "not yet valid",
    "no certificate",
    "wrong EKU",
    "revoked",
    "timeout",
    "evicted",
    "other",
];

/// The transport's counters: what it refused, evicted and closed, and what it holds now.
#[derive(Debug)]
pub struct ServerStats {
    pub tls_connections: AtomicU64,
    pub plaintext_connections: AtomicU64,
    pub handshakes: AtomicU64,
    pub handshakes_evicted: AtomicU64,
    pub handshakes_refused: Reasons,
    pub connections_refused: Reasons,
    pub calm_goaways: Reasons,
    pub credential_closes: Reasons,
    pub silent_closes: AtomicU64,
    /// Connections closed because a page they asked for was not taken in time.
    pub page_timeouts: AtomicU64,
    /// Request bytes charged now by messages still arriving (`server.max_request_buffer`).
    pub request_buffer_bytes: AtomicU64,
    pub request_buffer_refusals: AtomicU64,
    pub first_message_timeouts: AtomicU64,
    pub audit_lines_suppressed: AtomicU64,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            tls_connections: AtomicU64::new(0),
            plaintext_connections: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            handshakes_evicted: AtomicU64::new(0),
            handshakes_refused: Reasons::new(HANDSHAKE_REASONS),
            connections_refused: Reasons::new(&["tls", "plaintext", "handshakes"]),
            calm_goaways: Reasons::new(&["ping", "settings", "reset"]),
            credential_closes: Reasons::new(&["expired", "reverified"]),
            silent_closes: AtomicU64::new(0),
            page_timeouts: AtomicU64::new(0),
            request_buffer_bytes: AtomicU64::new(0),
            request_buffer_refusals: AtomicU64::new(0),
            first_message_timeouts: AtomicU64::new(0),
            audit_lines_suppressed: AtomicU64::new(0),
        }
    }
}

impl ServerStats {
    pub fn snapshot(&self) -> ServerProto {
        let n = |a: &AtomicU64| a.load(Relaxed);
        ServerProto {
            tls_connections: n(&self.tls_connections),
            plaintext_connections: n(&self.plaintext_connections),
            handshakes: n(&self.handshakes),
            handshakes_evicted: n(&self.handshakes_evicted),
            handshakes_refused: self.handshakes_refused.snapshot(),
            connections_refused: self.connections_refused.snapshot(),
            calm_goaways: self.calm_goaways.snapshot(),
            credential_closes: self.credential_closes.snapshot(),
            silent_closes: n(&self.silent_closes),
            request_buffer_bytes: n(&self.request_buffer_bytes),
            request_buffer_refusals: n(&self.request_buffer_refusals),
            first_message_timeouts: n(&self.first_message_timeouts),
            audit_lines_suppressed: n(&self.audit_lines_suppressed),
            page_timeouts: n(&self.page_timeouts),
        }
    }
}

impl Default for RpcStats {
    fn default() -> Self {
        RpcStats::new()
    }
}

impl RpcStats {
    /// Counters for every method of [`methods::ALL`], plus `unknown`.
    pub fn new() -> RpcStats {
        RpcStats::for_paths(&methods::ALL.map(|m| m.path))
    }

    /// Counters for these full method paths (e.g. `/vitals.echo.v1.Echo/Echo`), in order.
    fn for_paths(paths: &[&'static str]) -> RpcStats {
        let mut methods: Vec<Method> = paths.iter().map(|p| Method::new(p)).collect();
        methods.push(Method::new(UNKNOWN));
        RpcStats {
            methods,
            server: ServerStats::default(),
        }
    }

    /// Where the counters of the method at `index` of [`methods::ALL`] are; `unknown`'s
    /// for `None`.
    pub fn index_of(&self, method: Option<usize>) -> usize {
        let unknown = self.methods.len() - 1;
        method.filter(|&i| i < unknown).unwrap_or(unknown)
    }

    /// The counters for a request path; `unknown` for a path not served.
    pub fn method(&self, path: &str) -> &Method {
        self.at(self.index(path))
    }

    /// Where a path's counters are, to find them again without comparing strings.
    pub fn index(&self, path: &str) -> usize {
        let known = self.methods.len() - 1;
        self.methods[..known]
            .iter()
            .position(|m| m.name == path)
            .unwrap_or(known)
    }

    /// The counters at an [`RpcStats::index`].
    pub fn at(&self, index: usize) -> &Method {
        &self.methods[index]
    }

    /// The counters of every routed method, in [`methods::ALL`]'s order (`unknown` left out).
    pub fn routed(&self) -> &[Method] {
        &self.methods[..self.methods.len() - 1]
    }

    /// Every method's counters, for a metrics snapshot. Methods never called are left out.
    pub fn snapshot(&self) -> Vec<MethodStatsProto> {
        self.methods
            .iter()
            .filter(|m| m.calls.load(Relaxed) > 0)
            .map(Method::snapshot)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished call lands in its method, its status and the right latency bucket.
    #[test]
    fn records_calls_codes_and_buckets() {
        let stats = RpcStats::for_paths(&["/a.A/X"]);
        let m = stats.method("/a.A/X");
        m.start();
        m.start();
        m.finish(tonic::Code::Ok, Duration::from_micros(100));
        assert_eq!(m.in_flight.load(Relaxed), 1);
        m.finish(tonic::Code::DeadlineExceeded, Duration::from_micros(101));
        let snap = stats.snapshot();
        assert_eq!(snap.len(), 1);
        let s = &snap[0];
        assert_eq!((s.calls, s.in_flight, s.latency_sum_micros), (2, 0, 201));
        let codes: Vec<_> = s
            .statuses
            .iter()
            .map(|c| (c.code.as_str(), c.count))
            .collect();
        assert_eq!(codes, vec![("OK", 1), ("DEADLINE_EXCEEDED", 1)]);
        assert_eq!(s.latency[0].count, 1, "100us is inside the 100us bucket");
        assert_eq!(s.latency[1].count, 1, "101us goes to the 250us bucket");
        assert_eq!(
            s.latency.last().unwrap().le_micros,
            0,
            "the last bucket is +Inf"
        );
    }

    /// Paths the server does not serve share one `unknown` entry.
    #[test]
    fn unknown_paths_share_one_entry() {
        let stats = RpcStats::for_paths(&["/a.A/X"]);
        for path in ["/x/y", "/random/garbage", ""] {
            stats.method(path).start();
        }
        assert_eq!(stats.method("/whatever").name(), UNKNOWN);
        assert_eq!(stats.snapshot()[0].calls, 3);
    }

    /// The daemon's table follows the method table; an unrouted call counts as unknown.
    #[test]
    fn routed_methods_have_their_place() {
        let stats = RpcStats::new();
        for (i, m) in methods::ALL.iter().enumerate() {
            assert_eq!(stats.at(stats.index_of(Some(i))).name(), m.path);
            assert_eq!(stats.method(m.path).name(), m.path);
        }
        assert_eq!(stats.at(stats.index_of(None)).name(), UNKNOWN);
    }

    /// Status codes map to their canonical names.
    #[test]
    fn code_names() {
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }
}

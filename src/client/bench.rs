//! The load generator: `connections` HTTP/2 connections, each carrying `streams` calls at
//! a time, every one a task that loops: call, record, call.
//!
//! The client must not be the bottleneck, so a call costs as little as we can make it. It
//! speaks gRPC on raw h2 streams rather than through a tonic channel: a channel puts every
//! call through a buffer task and hyper's dispatch task before h2, and measured on
//! loopback that doubled the client's CPU per call (21 against 11 us at 512 in flight).
//! The request head and the framed message are built once and every call sends the same
//! bytes (clones of a refcount, no protobuf encoding); the reply is read to its trailers
//! and counted, not decoded; each task keeps its own histogram and counters (merged at the
//! end, so the only shared write is the request ticket); the runtime has a worker per
//! core. The report includes the CPU this process used, per call and as a share of one
//! core, to show how much headroom was left.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::HeaderValue;
use prost::Message;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::Code;

use super::{Dial, Error, Liveness, cpu, histogram::Histogram};
use crate::{proto::echo::EchoRequest, rpc_stats::code_name};

/// HTTP/2 flow-control windows, as hyper (and so tonic) sets them: 32 streams of 4 KiB
/// replies must not stall on the 64 KiB protocol default.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The load: where it goes, what each call sends, how many at once and for how long.
#[derive(Debug, Clone)]
pub struct Load {
    /// `host:port` targets; the connections are spread over them in turn.
    pub targets: Vec<String>,
    /// Request metadata on every call, lowercase keys.
    pub headers: Vec<(String, String)>,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Calls in flight on each connection.
    pub streams: usize,
    /// Stop after this many calls...
    pub requests: Option<u64>,
    /// ...or after this long, measured from the end of the warmup.
    pub duration: Option<Duration>,
    /// Calls made first and not measured.
    pub warmup: Duration,
    /// Bytes of `echo_message` in each request (echoed back).
    pub size: usize,
    /// `/package.Service/Method`, taking and returning the echo messages.
    pub method: String,
    /// The deadline of each call.
    pub timeout: Option<Duration>,
    /// Ask the server to fail every call with this code (the echo status knob).
    pub status: Option<Code>,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// What vitalsctl itself used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuUse {
    /// User + system seconds over the measured window.
    pub seconds: f64,
    /// 100 is one core busy the whole window.
    pub percent_of_one_core: f64,
    pub cores: usize,
    pub us_per_request: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub targets: Vec<String>,
    pub transport: &'static str,
    pub method: String,
    pub connections: usize,
    pub streams: usize,
    pub in_flight: usize,
    pub size: usize,
    /// The measured window (after the warmup), in seconds.
    pub seconds: f64,
    /// Calls completed in the measured window.
    pub requests: u64,
    pub ok: u64,
    /// Failed calls by status code name.
    pub errors: BTreeMap<&'static str, u64>,
    /// Of the failed calls, those that got no status from the server (transport errors).
    pub client_errors: u64,
    /// Calls completed during the warmup, not in any other figure.
    pub warmup_requests: u64,
    pub requests_per_sec: f64,
    pub latency_us: Latency,
    /// `None` where /proc is not readable.
    pub cpu: Option<CpuUse>,
}

/// What one task saw.
struct Tally {
    latency: Histogram,
    codes: [u64; 17],
    client_errors: u64,
    warmup: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: Histogram::new(),
            codes: [0; 17],
            client_errors: 0,
            warmup: 0,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.latency.merge(&other.latency);
        for (a, b) in self.codes.iter_mut().zip(other.codes) {
            *a += b;
        }
        self.client_errors += other.client_errors;
        self.warmup += other.warmup;
    }
}

/// What every call sends, built once: the request head and the framed message.
struct Plan {
    head: http::request::Parts,
    frame: Bytes,
    timeout: Option<Duration>,
    requests: Option<u64>,
    issued: AtomicU64,
    stop_at: Option<Instant>,
    measure_from: Instant,
}

/// How a call failed.
enum Failed {
    /// The server's status.
    Status(Code),
    /// No status: the stream or connection failed, or the deadline passed here.
    Client(Code),
}

fn client_error(err: h2::Error) -> Failed {
    Failed::Client(match err.reason() {
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::REFUSED_STREAM) | None => Code::Unavailable,
        Some(_) => Code::Internal,
    })
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from(code))
}

/// One unary call on the raw HTTP/2 stream: headers, the message, then read the reply to
/// its trailers (releasing flow control as it comes) without decoding it.
async fn call(send: &mut SendRequest<Bytes>, plan: &Plan) -> Result<(), Failed> {
    futures_util::future::poll_fn(|cx| send.poll_ready(cx))
        .await
        .map_err(client_error)?;
    let mut request = http::Request::new(());
    *request.method_mut() = plan.head.method.clone();
    *request.uri_mut() = plan.head.uri.clone();
    *request.headers_mut() = plan.head.headers.clone();
    let (response, mut body) = send.send_request(request, false).map_err(client_error)?;
    body.send_data(plan.frame.clone(), true)
        .map_err(client_error)?;
    let response = response.await.map_err(client_error)?;
    // Trailers-Only: the status is in the headers.
    let status = match grpc_status(response.headers()) {
        Some(code) => code,
        None => {
            let mut reply = response.into_body();
            while let Some(chunk) = reply.data().await {
                let chunk = chunk.map_err(client_error)?;
                let _ = reply.flow_control().release_capacity(chunk.len());
            }
            let trailers = reply.trailers().await.map_err(client_error)?;
            trailers
                .as_ref()
                .and_then(grpc_status)
                .ok_or(Failed::Client(Code::Internal))?
        }
    };
    match status {
        Code::Ok => Ok(()),
        code => Err(Failed::Status(code)),
    }
}

/// One of the `streams` tasks of a connection: call, record, call, until told to stop.
async fn worker(mut send: SendRequest<Bytes>, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::new();
    loop {
        if let Some(limit) = plan.requests
            && plan.issued.fetch_add(1, Ordering::Relaxed) >= limit
        {
            break;
        }
        let started = Instant::now();
        if plan.stop_at.is_some_and(|stop| started >= stop) {
            break;
        }
        let result = match plan.timeout {
            None => call(&mut send, &plan).await,
            Some(limit) => tokio::time::timeout(limit, call(&mut send, &plan))
                .await
                .unwrap_or(Err(Failed::Client(Code::DeadlineExceeded))),
        };
        let took = started.elapsed();
        if started < plan.measure_from {
            tally.warmup += 1;
            continue;
        }
        tally.latency.record(took);
        match result {
            Ok(()) => tally.codes[0] += 1,
            Err(Failed::Status(code)) => tally.codes[(code as usize).min(16)] += 1,
            Err(Failed::Client(code)) => {
                tally.codes[(code as usize).min(16)] += 1;
                tally.client_errors += 1;
                // A broken connection fails every call at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

/// An HTTP/2 connection: its sender, and the task that drives it until told to close.
struct Connection {
    send: SendRequest<Bytes>,
    close: oneshot::Sender<()>,
    task: JoinHandle<()>,
    liveness: Arc<Liveness>,
}

async fn connect(dial: &Dial) -> Result<Connection, Error> {
    let connector = dial.connector()?;
    let liveness = Arc::new(Liveness::default());
    let timed_out = || Error::ConnectTimeout {
        addr: dial.addr.clone(),
        timeout: dial.connect_timeout,
    };
    let deadline = tokio::time::Instant::now() + dial.connect_timeout;
    let handshake = async {
        let stream = connector.stream(liveness.clone()).await?;
        h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| {
                e.into_io()
                    .unwrap_or_else(|| std::io::Error::other("HTTP/2 handshake failed"))
            })
    };
    let (send, connection) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(source)) => {
            return Err(Error::Stream {
                addr: dial.addr.clone(),
                source,
            });
        }
        Err(_) => return Err(timed_out()),
    };
    let (close, closing) = oneshot::channel();
    let task = tokio::spawn(async move {
        tokio::pin!(connection);
        tokio::select! {
            _ = &mut connection => return,
            _ = closing => {}
        }
        // Polled again once every sender is gone, h2 sends GOAWAY and shuts the stream
        // down (close_notify, FIN, the server's goodbye read).
        let _ = connection.await;
    });
    // As for every connection here: connected once the server has spoken HTTP/2.
    match tokio::time::timeout_at(deadline, liveness.preface()).await {
        Ok(Ok(())) => Ok(Connection {
            send,
            close,
            task,
            liveness,
        }),
        Ok(Err(why)) => Err(Error::NoPreface {
            addr: dial.addr.clone(),
            why,
        }),
        Err(_) => Err(timed_out()),
    }
}

/// Connects, runs the load, closes the connections politely, and reports.
pub async fn run(load: &Load, dialer: &Dial) -> Result<Report, Error> {
    let message = EchoRequest {
        echo_message: "x".repeat(load.size),
        status_code: load.status.map_or(0, |c| c as i32),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);

    let dials: Vec<Dial> = (0..load.connections)
        .map(|i| dialer.target(&load.targets[i % load.targets.len()]))
        .collect();
    let connections = futures_util::future::join_all(dials.iter().map(connect))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;

    let scheme = if dialer.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = format!("{scheme}://{}{}", dials[0].addr, load.method);
    let mut head = http::Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(agent) = &dialer.user_agent {
        head = head.header("user-agent", agent.as_str());
    }
    if let Some(timeout) = load.timeout {
        head = head.header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)));
    }
    let mut head = head
        .body(())
        .map_err(|_| Error::Address(load.method.clone()))?
        .into_parts()
        .0;
    for (key, value) in &load.headers {
        if let (Ok(key), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            head.headers.append(key, value);
        }
    }

    let cpu_start = cpu::process_time();
    let started = Instant::now();
    let measure_from = started + load.warmup;
    let plan = Arc::new(Plan {
        head,
        frame: frame.freeze(),
        timeout: load.timeout,
        requests: load.requests,
        issued: AtomicU64::new(0),
        stop_at: load.duration.map(|d| measure_from + d),
        measure_from,
    });
    let cpu_at_measure = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        cpu::process_time()
    });
    let mut tasks = tokio::task::JoinSet::new();
    for connection in &connections {
        for _ in 0..load.streams {
            tasks.spawn(worker(connection.send.clone(), plan.clone()));
        }
    }
    let mut tally = Tally::new();
    while let Some(done) = tasks.join_next().await {
        tally.merge(&done.expect("bench tasks do not panic"));
    }
    let ended = Instant::now();
    let cpu_end = cpu::process_time();
    let cpu_from = if load.warmup.is_zero() || ended < measure_from {
        cpu_start
    } else {
        cpu_at_measure.await.ok().flatten()
    };

    for connection in connections {
        let Connection {
            send,
            close,
            task,
            liveness,
        } = connection;
        drop(send);
        let _ = close.send(());
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        liveness.closed(Duration::from_millis(100)).await;
    }

    let window = ended
        .saturating_duration_since(measure_from.min(ended))
        .max(Duration::from_micros(1));
    let requests = tally.latency.count();
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    let h = &tally.latency;
    let cpu = match (cpu_from, cpu_end) {
        (Some(from), Some(to)) => {
            let seconds = to.saturating_sub(from).as_secs_f64();
            Some(CpuUse {
                seconds,
                percent_of_one_core: 100.0 * seconds / window.as_secs_f64(),
                cores: crate::runtime::cpus(),
                us_per_request: if requests == 0 {
                    0.0
                } else {
                    seconds * 1e6 / requests as f64
                },
            })
        }
        _ => None,
    };
    Ok(Report {
        targets: load.targets.clone(),
        transport: match &dialer.tls {
            None => "plaintext",
            Some(tls) if tls.client_auth_cert_resolver.has_certs() => "mutual TLS",
            Some(_) => "TLS",
        },
        method: load.method.clone(),
        connections: load.connections,
        streams: load.streams,
        in_flight: load.connections * load.streams,
        size: load.size,
        seconds: window.as_secs_f64(),
        requests,
        ok: tally.codes[0],
        errors: tally
            .codes
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code_name(Code::from(code as i32)), *n))
            .collect(),
        client_errors: tally.client_errors,
        warmup_requests: tally.warmup,
        requests_per_sec: requests as f64 / window.as_secs_f64(),
        latency_us: Latency {
            min: us(h.min()),
            p50: us(h.quantile(0.5)),
            p90: us(h.quantile(0.9)),
            p99: us(h.quantile(0.99)),
            p999: us(h.quantile(0.999)),
            max: us(h.max()),
            mean: us(h.mean()),
        },
        cpu,
    })
}

impl Report {
    pub fn to_text(&self) -> String {
        let ms = |us: f64| {
            if us >= 1000.0 {
                format!("{:.2}ms", us / 1000.0)
            } else {
                format!("{us:.0}us")
            }
        };
        let l = &self.latency_us;
        let mut out = format!(
            "target     {} ({}) {}\n\
             load       {} connections x {} streams = {} in flight, {}-byte messages\n\
             requests   {} in {:.2}s = {:.0}/s; {} ok, {} failed{}\n\
             latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (min {}, mean {})\n",
            self.targets.join(", "),
            self.transport,
            self.method,
            self.connections,
            self.streams,
            self.in_flight,
            self.size,
            self.requests,
            self.seconds,
            self.requests_per_sec,
            self.ok,
            self.requests - self.ok,
            if self.warmup_requests > 0 {
                format!(" (and {} during the warmup)", self.warmup_requests)
            } else {
                String::new()
            },
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            ms(l.min),
            ms(l.mean),
        );
        if !self.errors.is_empty() {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            out += &format!(
                "errors     {}{}\n",
                errors.join(", "),
                if self.client_errors > 0 {
                    format!(" ({} without a server status)", self.client_errors)
                } else {
                    String::new()
                }
            );
        }
        if let Some(cpu) = &self.cpu {
            out += &format!(
                "client cpu {:.2}s = {:.0}% of one core ({} cores), {:.1}us per request\n",
                cpu.seconds, cpu.percent_of_one_core, cpu.cores, cpu.us_per_request
            );
        }
        out
    }
}

//! What the vitalsctl tests share: running the built binary (to completion, or in the
//! background while the test acts on a daemon), the flags that reach a test daemon, its
//! RPC statistics, and servers that are real but unlike vitalsd: an HTTP/2 server that
//! answers every call with one fixed gRPC status, and a listener that never answers.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{TestDaemon, eventually};

/// Longest any vitalsctl run in a test may take.
const LIMIT: Duration = Duration::from_secs(20);

/// A finished vitalsctl run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

fn command(args: &[String]) -> Command {
    command_as(env!("CARGO_BIN_EXE_vitalsctl").as_ref(), args)
}

fn command_as(program: &std::path::Path, args: &[String]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs vitalsctl to completion (killed after 20 s).
pub async fn vitalsctl<S: AsRef<str>>(args: &[S]) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    run(command(&args), &args).await
}

/// Runs vitalsctl through a symlink named `grpc_health_probe`, as a drop-in is installed.
pub async fn grpc_health_probe<S: AsRef<str>>(args: &[S]) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("grpc_health_probe");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vitalsctl"), &link).unwrap();
    run(command_as(&link, &args), &args).await
}

async fn run(mut command: Command, args: &[String]) -> Run {
    let started = Instant::now();
    let mut child = command.spawn().expect("vitalsctl starts");
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("vitalsctl {args:?} ran longer than {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let took = started.elapsed();
    Run {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        took,
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// vitalsctl running in the background; its stdout lines as they come.
pub struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    pub fn start<S: AsRef<str>>(args: &[S]) -> Background {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let mut child = command(&args).spawn().expect("vitalsctl starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = Some(read_all(child.stderr.take().unwrap()));
        Background {
            child,
            lines,
            stderr,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for the process to end (at most `limit`): its exit code, stdout lines, stderr.
    pub async fn finish(mut self, limit: Duration) -> (Option<i32>, Vec<String>, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < limit,
                "vitalsctl did not end within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let stderr = self.stderr.take().unwrap().join().unwrap();
        // The stdout reader ends at EOF; give it a moment to push the last lines.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&self.lines) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (status.code(), self.lines(), stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags of a mutual TLS connection to `daemon` (grpc_health_probe spelling).
pub fn mtls(daemon: &TestDaemon) -> Vec<String> {
    let path = |name: &str| daemon.pki.path(name).display().to_string();
    vec![
        "-tls".into(),
        "-tls-ca-cert".into(),
        path("ca.crt"),
        "-tls-client-cert".into(),
        path("client.crt"),
        "-tls-client-key".into(),
        path("client.key"),
    ]
}

/// `args` with `-addr ADDR` and the mutual TLS flags of `daemon`.
pub fn at<S: AsRef<str>>(daemon: &TestDaemon, args: &[S]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    all.extend(["-addr".to_string(), daemon.addr.to_string()]);
    all.extend(mtls(daemon));
    all
}

/// The daemon's statistics for Echo/Echo: calls, and calls by status code.
pub async fn echo_stats(daemon: &TestDaemon) -> (u64, BTreeMap<String, u64>) {
    let snapshot = daemon.snapshot().await;
    snapshot
        .rpc
        .iter()
        .find(|m| m.method == "/vitals.echo.v1.Echo/Echo")
        .map(|m| {
            let codes = m
                .statuses
                .iter()
                .map(|s| (s.code.clone(), s.count))
                .collect();
            (m.calls, codes)
        })
        .unwrap_or_default()
}

/// An address where nothing listens.
pub fn refused_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A listener that completes TCP handshakes (the kernel does) but never reads or answers.
pub fn silent_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// A plaintext HTTP/2 server that answers every call Trailers-Only with these headers
/// (`grpc-status` among them), as a gRPC server does for a service it lacks; it counts
/// the calls.
pub struct Stub {
    pub addr: String,
    calls: Arc<AtomicUsize>,
}

impl Stub {
    pub async fn start(headers: &'static [(&'static str, &'static str)]) -> Stub {
        Stub::slow(headers, Duration::ZERO).await
    }

    /// Answers each call only after `delay`.
    pub async fn slow(headers: &'static [(&'static str, &'static str)], delay: Duration) -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut response = http::Response::builder()
                                .header("content-type", "application/grpc");
                            for (k, v) in headers {
                                response = response.header(*k, *v);
                            }
                            Ok::<_, Infallible>(
                                response
                                    .body(http_body_util::Empty::<Bytes>::new())
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Stub { addr, calls }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The daemon (logging at debug) saw `n` connections end politely: each closed after a
/// GOAWAY from the client, and nothing in its log speaks of an IO error or a reset.
pub async fn assert_closed_politely(daemon: &TestDaemon, n: usize) {
    eventually(Duration::from_secs(5), || {
        let closed = daemon
            .logs()
            .iter()
            .filter(|l| l.contains("connection closed"))
            .count();
        async move {
            (closed >= n)
                .then_some(())
                .ok_or(format!("{closed} closed"))
        }
    })
    .await;
    let logs = daemon.logs();
    let goaways = logs
        .iter()
        .filter(|l| l.contains("received") && l.contains("GoAway") && l.contains("NO_ERROR"))
        .count();
    assert!(goaways >= n, "{goaways} GOAWAYs from the client: {logs:#?}");
    for line in &logs {
        let lower = line.to_lowercase();
        assert!(
            !lower.contains("io error")
                && !lower.contains("reset")
                && !lower.contains("connection ended"),
            "{line}"
        );
    }
}

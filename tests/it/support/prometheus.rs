//! A real Prometheus (Debian's `prometheus` package) on loopback with a temporary config
//! and data directory, stopped and started again on the same data directory when a test
//! needs an outage; its HTTP API queried with the daemon's own HTTP client. Debian's
//! `victoria-metrics` the same way, as a second remote_write receiver with the same query
//! API. Also the HTTPS scraping client the tests use to read `/metrics` themselves.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tempfile::TempDir;
use vitals::outbound;

use super::{TestPki, eventually, free_port, require};

/// Which time-series database runs.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Prometheus { receiver: bool },
    VictoriaMetrics,
}

/// A Prometheus (or VictoriaMetrics) process; killed when dropped.
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    /// Holds prometheus.yml and data/.
    pub dir: Arc<TempDir>,
    engine: Engine,
    api: outbound::Client,
}

impl Prometheus {
    /// Starts Prometheus with `scrape_configs` (YAML, may be empty) and a 1 s scrape
    /// interval; with `receiver`, it also takes remote_write at /api/v1/write.
    pub async fn start(scrape_configs: &str, receiver: bool) -> Prometheus {
        require("prometheus", "prometheus");
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n{}",
            if scrape_configs.is_empty() {
                String::new()
            } else {
                format!("scrape_configs:\n{scrape_configs}")
            }
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        Prometheus::run(dir, free_port(), Engine::Prometheus { receiver }).await
    }

    /// Starts Debian's single-node VictoriaMetrics, which takes remote_write at
    /// /api/v1/write and answers Prometheus's query API; fresh samples are queryable at
    /// once (`-search.latencyOffset=0s`).
    pub async fn victoria_metrics() -> Prometheus {
        require("victoria-metrics", "victoria-metrics");
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Prometheus::run(dir, free_port(), Engine::VictoriaMetrics).await
    }

    async fn run(dir: Arc<TempDir>, port: u16, engine: Engine) -> Prometheus {
        let data = dir.path().join("data");
        let mut command = match engine {
            Engine::Prometheus { receiver } => {
                let mut command = Command::new("prometheus");
                command
                    .arg(format!(
                        "--config.file={}",
                        dir.path().join("prometheus.yml").display()
                    ))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"));
                if receiver {
                    command.arg("--web.enable-remote-write-receiver");
                }
                command
            }
            Engine::VictoriaMetrics => {
                let mut command = Command::new("victoria-metrics");
                command
                    .arg(format!("-storageDataPath={}", data.display()))
                    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .arg("-search.latencyOffset=0s")
                    .arg("-loggerOutput=stderr");
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap());
        let child = command.spawn().expect("the time-series database starts");
        let api = outbound::Client::new(
            &format!("http://127.0.0.1:{port}"),
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let prometheus = Prometheus {
            child: Some(child),
            port,
            dir,
            engine,
            api,
        };
        let ready = match engine {
            Engine::Prometheus { .. } => "/-/ready",
            Engine::VictoriaMetrics => "/health",
        };
        eventually(Duration::from_secs(30), || async {
            match prometheus.get(ready).await {
                Ok((StatusCode::OK, _)) => Ok(()),
                other => Err(format!("not ready: {other:?}\n{}", prometheus.log())),
            }
        })
        .await;
        prometheus
    }

    /// Stops it (SIGTERM, as an operator would) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let again = Prometheus::run(self.dir.clone(), self.port, self.engine).await;
        *self = again;
    }

    /// The remote_write URL.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let request = Request::get(path).body(Full::new(Bytes::new())).unwrap();
        self.api
            .send(request, 16 << 20)
            .await
            .map(|r| (r.status, r.body))
            .map_err(|e| e.reason().to_owned())
    }

    /// The `data.result` of an instant query.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", encode(promql)))
            .await
            .unwrap_or_else(|e| panic!("{promql}: {e}"));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::OK, "{promql}: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of an instant query that returns one series, if it does.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        let v = result.first()?["value"][1].as_str()?;
        v.parse().ok()
    }

    /// Waits (up to `limit`) until `promql` returns a single value that `ok` accepts.
    pub async fn wait_value(&self, promql: &str, limit: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let seen = self.value(promql).await;
            match seen {
                Some(v) if ok(v) => return v,
                _ if std::time::Instant::now() >= deadline => {
                    panic!("not within {limit:?}: {promql} is {seen:?}\n{}", self.log())
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// A range query's values (one series expected): each point's value, over the last
    /// `seconds` at `step` seconds.
    pub async fn range_values(&self, promql: &str, seconds: u64, step: u64) -> Vec<f64> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={end}&step={step}",
            encode(promql),
            end - seconds
        );
        let (status, body) = self
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("{promql}: {e}"));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::OK, "{promql}: {json}");
        let result = json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(result.len(), 1, "{promql}: one series, got {json}");
        result[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[1].as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// The metric names that have a series for `job` now.
    pub async fn names(&self, job: &str) -> std::collections::BTreeSet<String> {
        self.query(&format!("group by (__name__) ({{job=\"{job}\"}})"))
            .await
            .iter()
            .filter_map(|r| r["metric"]["__name__"].as_str().map(str::to_owned))
            .collect()
    }

    /// The timestamps (ms) of the raw samples of `selector` over the last `range`.
    pub async fn sample_times(&self, selector: &str, range: &str) -> Vec<i64> {
        let result = self.query(&format!("{selector}[{range}]")).await;
        assert_eq!(result.len(), 1, "{selector}: one series, got {result:?}");
        result[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v[0].as_f64().unwrap() * 1000.0).round() as i64)
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// A scrape job for a daemon at `addr`, over mutual TLS with `NAME.crt`/`NAME.key` of
/// `pki`, HTTP/2 or not.
pub fn scrape_job(job: &str, addr: &str, pki: &TestPki, name: &str, http2: bool) -> String {
    let path = |f: &str| pki.path(f).display().to_string();
    format!(
        "  - job_name: {job}\n    scheme: https\n    enable_http2: {http2}\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n      server_name: localhost\n    static_configs:\n      - targets: ['{addr}']\n",
        path("ca.crt"),
        path(&format!("{name}.crt")),
        path(&format!("{name}.key")),
    )
}

/// An HTTPS client to a daemon at `addr` as `NAME.crt`/`NAME.key` of `pki`, offering only
/// `alpn` (`http/1.1`, or `h2`).
pub fn https_client(addr: &str, pki: &TestPki, name: &str, alpn: &[u8]) -> outbound::Client {
    let chain = vitals::tls::load_certs(&pki.path(&format!("{name}.crt"))).unwrap();
    let key = vitals::tls::load_key(&pki.path(&format!("{name}.key"))).unwrap();
    let tls = outbound::tls_config(&pki.path("ca.crt"), Some((chain, key)), &[alpn]).unwrap();
    outbound::Client::new(
        &format!("https://{addr}"),
        Some(tls),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// GET `path` with these headers; the status, headers and body.
pub async fn get(
    client: &outbound::Client,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Bytes) {
    let mut request = Request::get(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .send(request.body(Full::new(Bytes::new())).unwrap(), 16 << 20)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {}", e.reason()));
    (response.status, response.body)
}

/// Runs promtool with `args`, `stdin` fed in; its exit code and stdout+stderr.
pub fn promtool(args: &[&str], stdin: &[u8], cwd: &Path) -> (Option<i32>, String) {
    use std::io::Write;
    require("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// A file of the repository (the Prometheus examples in config/prometheus/).
pub fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The value of the sample `series` (its name and labels as the text format writes them,
/// e.g. `vitals_push_buffer_batches`) in the daemon's own `/metrics`.
pub async fn scraped(daemon: &super::TestDaemon, series: &str) -> Option<f64> {
    let client = https_client(&daemon.addr.to_string(), &daemon.pki, "client", b"http/1.1");
    let (_, body) = get(&client, "/metrics", &[]).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Waits (up to `limit`) until the daemon's own `series` satisfies `ok`; returns it.
pub async fn wait_scraped(
    daemon: &super::TestDaemon,
    series: &str,
    limit: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let seen = scraped(daemon, series).await;
        match seen {
            Some(v) if ok(v) => return v,
            _ if std::time::Instant::now() >= deadline => {
                panic!("not within {limit:?}: {series} is {seen:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// An HTTP/2 connection (ALPN h2) to a daemon at `addr` as `NAME.crt`/`NAME.key` of `pki`;
/// the sender can be cloned for concurrent requests. (The daemon's own client speaks only
/// HTTP/1.1.)
pub async fn h2_sender(
    addr: std::net::SocketAddr,
    pki: &TestPki,
    name: &str,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let chain = vitals::tls::load_certs(&pki.path(&format!("{name}.crt"))).unwrap();
    let key = vitals::tls::load_key(&pki.path(&format!("{name}.key"))).unwrap();
    let tls = outbound::tls_config(&pki.path("ca.crt"), Some((chain, key)), &[b"h2"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

/// GET `path` over HTTP/2 on `sender`; the status and body.
pub async fn h2_get(
    sender: &hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<(StatusCode, Bytes), String> {
    let mut sender = sender.clone();
    let request = Request::get(format!("https://localhost:{}{path}", addr.port()))
        .body(http_body_util::Empty::new())
        .unwrap();
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Debian's node_exporter on loopback, killed when dropped.
pub struct NodeExporter {
    child: Child,
    pub port: u16,
}

impl NodeExporter {
    /// node_exporter with its default collectors, reading `textfiles`, on a free port.
    pub async fn start(textfiles: &Path) -> NodeExporter {
        require("prometheus-node-exporter", "prometheus-node-exporter");
        let port = free_port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--collector.textfile.directory={}",
                textfiles.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node_exporter starts");
        let exporter = NodeExporter { child, port };
        eventually(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
        exporter
    }

    /// A plain scrape job for it.
    pub fn job(&self, job: &str) -> String {
        format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            self.port
        )
    }

    /// Its page now.
    pub async fn page(&self) -> String {
        let client = outbound::Client::new(
            &format!("http://127.0.0.1:{}", self.port),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        let request = Request::get("/metrics")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.send(request, 16 << 20).await.unwrap();
        String::from_utf8_lossy(&response.body).into_owned()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! `GET /metrics` on the mutual-TLS port: a real Prometheus scrapes it over HTTP/1.1 and
//! HTTP/2 with a client certificate, promtool checks both formats and the alert rules,
//! and the page answers HTTP like a web server (formats, gzip, 403, 404, 505).

use std::{io::Read, sync::Arc, time::Duration};

use vitals::pki::{Leaf, Usage};

use crate::support::{
    TestDaemon, TestPki,
    prometheus::{Prometheus, example, get, h2_get, h2_sender, https_client, promtool, scrape_job},
};

/// The identity of a client certificate no rule grants anything.
const DENIED: &str = "spiffe://test.vitals/no-grant";

const OPEN_METRICS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn pki_with_denied() -> Arc<TestPki> {
    let pki = TestPki::new();
    pki.issue("denied", &Leaf::new("denied", &[DENIED], Usage::Client, 1));
    Arc::new(pki)
}

/// The CPUs /proc/stat lists (what node_cpu_seconds_total has a `cpu` for).
fn cpus() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count() as f64
}

async fn scraped_by_prometheus(http2: bool) {
    let pki = pki_with_denied();
    let daemon = TestDaemon::builder()
        .pki(pki.clone())
        .dropin("[log]\nlevel = \"info,vitals=debug\"\n")
        .start()
        .await;
    let addr = daemon.addr.to_string();
    let jobs = scrape_job("vitals", &addr, &pki, "client", http2)
        + &scrape_job("denied", &addr, &pki, "denied", http2);
    let prometheus = Prometheus::start(&jobs, false).await;
    let limit = Duration::from_secs(30);

    prometheus
        .wait_value("up{job=\"vitals\"}", limit, |v| v == 1.0)
        .await;
    prometheus
        .wait_value("up{job=\"denied\"}", limit, |v| v == 0.0)
        .await;

    let cores = cpus();
    let listed = prometheus
        .wait_value(
            "count(count by (cpu) (node_cpu_seconds_total{job=\"vitals\"}))",
            limit,
            |_| true,
        )
        .await;
    assert_eq!(listed, cores);
    // Cumulative seconds, so a rate is in CPUs: all modes together come to the core
    // count once a few samples are in (percentages would be 100x that), and busy time
    // lies in [0, cores].
    prometheus
        .wait_value(
            "sum(rate(node_cpu_seconds_total{job=\"vitals\"}[10s]))",
            limit,
            |all| all > cores * 0.8 && all < cores * 1.2,
        )
        .await;
    let busy = prometheus
        .value("sum(rate(node_cpu_seconds_total{job=\"vitals\",mode!=\"idle\"}[10s]))")
        .await
        .unwrap();
    assert!((0.0..=cores).contains(&busy), "busy {busy} of {cores}");

    prometheus
        .wait_value(
            "node_filesystem_avail_bytes{job=\"vitals\",mountpoint=\"/\"}",
            limit,
            |v| v > 0.0,
        )
        .await;

    let handled = "grpc_server_handled_total{job=\"vitals\",grpc_service=\"vitals.echo.v1.Echo\",grpc_method=\"Echo\",grpc_type=\"unary\",grpc_code=\"OK\"}";
    let before = prometheus.wait_value(handled, limit, |_| true).await;
    for _ in 0..5 {
        daemon.echo_ok().await;
    }
    prometheus
        .wait_value(handled, limit, |v| v >= before + 5.0)
        .await;

    let http1 = daemon
        .logs()
        .iter()
        .any(|l| l.contains("HTTP/1.1 connection open"));
    assert_eq!(
        http1,
        !http2,
        "Prometheus scraped over {}",
        if http1 { "HTTP/1.1" } else { "HTTP/2" }
    );
}

/// Prometheus scrapes over HTTP/1.1 (`enable_http2: false`) with a client certificate:
/// up is 1, CPU seconds rate in cores, the root filesystem has free space, and echo calls
/// raise grpc_server_handled_total; a client without the grant is `up == 0`.
#[tokio::test]
async fn prometheus_scrapes_over_http1() {
    scraped_by_prometheus(false).await;
}

/// The same over HTTP/2.
#[tokio::test]
async fn prometheus_scrapes_over_http2() {
    scraped_by_prometheus(true).await;
}

/// The page speaks HTTP: text 0.0.4 by default, OpenMetrics for Prometheus' Accept
/// header, gzip when accepted; 403 without a grant, 405 for other methods, 505 for a gRPC
/// path over HTTP/1.1, 404 for anything else; the same page over HTTP/2.
#[tokio::test]
async fn metrics_page_speaks_http() {
    let pki = pki_with_denied();
    let daemon = TestDaemon::builder().pki(pki.clone()).start().await;
    let addr = daemon.addr.to_string();
    let http1 = https_client(&addr, &pki, "client", b"http/1.1");

    let (status, body) = get(&http1, "/metrics", &[]).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("# TYPE node_cpu_seconds_total counter\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));

    let (status, body) = get(&http1, "/metrics", &[("accept", OPEN_METRICS)]).await;
    assert_eq!(status, 200);
    let open = String::from_utf8(body.to_vec()).unwrap();
    assert!(open.contains("# TYPE node_cpu_seconds counter\n"), "{open}");
    assert!(open.ends_with("# EOF\n"));

    let (status, body) = get(&http1, "/metrics", &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert!(unzipped.contains("node_load1 "), "{unzipped}");
    assert!(body.len() * 3 < unzipped.len(), "gzip shrinks it");

    let denied = https_client(&addr, &pki, "denied", b"http/1.1");
    let (status, body) = get(&denied, "/metrics", &[]).await;
    assert_eq!(status, 403, "{body:?}");
    let (status, _) = get(&http1, "/vitals.echo.v1.Echo/Echo", &[]).await;
    assert_eq!(status, 505);
    let (status, _) = get(&http1, "/nope", &[]).await;
    assert_eq!(status, 404);
    let post = http::Request::post("/metrics")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(http1.send(post, 1 << 20).await.unwrap().status, 405);

    let h2 = h2_sender(daemon.addr, &pki, "client").await;
    let (status, body) = h2_get(&h2, daemon.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("node_load1 "));
    let denied = h2_sender(daemon.addr, &pki, "denied").await;
    let (status, _) = h2_get(&denied, daemon.addr, "/metrics").await.unwrap();
    assert_eq!(status, 403);
    // The gRPC services on the same HTTP/2 port are as they were.
    daemon.echo_ok().await;
}

/// The echo calls answered OK that a text page counts.
fn echo_ok_count(page: &[u8]) -> f64 {
    String::from_utf8_lossy(page)
        .lines()
        .find(|l| {
            l.starts_with("grpc_server_handled_total{")
                && l.contains("grpc_method=\"Echo\"")
                && l.contains("grpc_code=\"OK\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Scrapes within 250 ms of a render get that page again, byte for byte, even though
/// calls were counted in between (a flood costs one render, not one each); a scrape after
/// that renders anew and counts them.
#[tokio::test]
async fn scrapes_together_share_one_render() {
    let daemon = TestDaemon::start("").await;
    let client = https_client(&daemon.addr.to_string(), &daemon.pki, "client", b"http/1.1");
    let mut shared = false;
    for _ in 0..10 {
        // After 300 ms the next scrape renders anew.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let (_, first) = get(&client, "/metrics", &[]).await;
        daemon.echo_ok().await;
        let (_, second) = get(&client, "/metrics", &[]).await;
        // Under a loaded run the pair may take longer than the window; try again.
        if started.elapsed() < Duration::from_millis(200) {
            assert_eq!(first, second, "the same page within the window");
            shared = true;
            break;
        }
    }
    assert!(shared, "no two scrapes within 200 ms in 10 tries");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, before) = get(&client, "/metrics", &[]).await;
    daemon.echo_ok().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, after) = get(&client, "/metrics", &[]).await;
    assert_eq!(echo_ok_count(&after), echo_ok_count(&before) + 1.0);
}

/// promtool check metrics passes on the text format, its only remarks being on the
/// /proc/meminfo names node_exporter itself uses (node_memory_MemTotal_bytes and kin:
/// the dashboards need them as they are) and the ones it makes of node_exporter's own page
/// in the same run (node_netstat_Tcp_InSegs and kin, node_entropy_*_bits: the names the
/// dashboards and the mixin read). The OpenMetrics form is read by promtool's
/// OpenMetrics parser sample for sample (promtool 2.42's `check metrics` reads only the
/// text format; Prometheus' scrape negotiates OpenMetrics and reads it in the scrape
/// tests).
#[tokio::test]
async fn promtool_checks_both_formats() {
    let daemon = TestDaemon::start("").await;
    let client = https_client(&daemon.addr.to_string(), &daemon.pki, "client", b"http/1.1");
    daemon.echo_ok().await;
    let (_, text) = get(&client, "/metrics", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = promtool(&["check", "metrics"], &text, dir.path());
    let textfiles = tempfile::tempdir().unwrap();
    let exporter = crate::support::prometheus::NodeExporter::start(textfiles.path()).await;
    let (_, theirs) = promtool(
        &["check", "metrics"],
        exporter.page().await.as_bytes(),
        dir.path(),
    );
    // A parse error would be a remark too ("error while linting: ...").
    let remarks: Vec<&str> = out
        .lines()
        .filter(|l| {
            !(l.starts_with("node_memory_")
                && l.ends_with("metric names should be written in 'snake_case' not 'camelCase'"))
        })
        .filter(|l| !theirs.lines().any(|t| t == *l))
        .collect();
    assert!(remarks.is_empty(), "promtool says: {remarks:#?}");

    let (_, open) = get(&client, "/metrics", &[("accept", OPEN_METRICS)]).await;
    let open = String::from_utf8(open.to_vec()).unwrap();
    // The block import needs a timestamp on every sample.
    let mut stamped = String::new();
    let mut samples = 0;
    for line in open.lines() {
        stamped.push_str(line);
        if !line.starts_with('#') {
            stamped.push_str(" 1700000000");
            samples += 1;
        }
        stamped.push('\n');
    }
    std::fs::write(dir.path().join("open.txt"), &stamped).unwrap();
    let (code, out) = promtool(
        &[
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "open.txt",
            "blocks",
        ],
        b"",
        dir.path(),
    );
    assert_eq!(code, Some(0), "{out}");
    let series: usize = out
        .lines()
        .nth(1)
        .and_then(|row| row.split_whitespace().nth(6))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no block written: {out}"));
    assert_eq!(series, samples, "every sample read: {out}");
}

/// The alert rules in config/prometheus/ pass `promtool check rules`, and their unit tests (each
/// alert fires on the series that should make it fire) pass `promtool test rules`.
#[test]
fn alert_rules_check_out() {
    let dir = example("config/prometheus");
    let (code, out) = promtool(&["check", "rules", "alerts.yml"], b"", &dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let (code, out) = promtool(&["test", "rules", "alerts_test.yml"], b"", &dir);
    assert_eq!(code, Some(0), "{out}");
}

/// HEAD /metrics is answered as node_exporter's server answers it: 200, the GET answer's
/// headers (its length among them) and no body, on HTTP/1.1 and HTTP/2; a POST is 405 with
/// `Allow: GET, HEAD`. Over HTTP/2, a path that is neither a page nor a gRPC call is a 404,
/// not a 200 with grpc-status 12.
#[tokio::test]
async fn head_and_unknown_paths_answer_like_a_web_server() {
    let daemon = TestDaemon::start("").await;
    let addr = daemon.addr.to_string();
    let http1 = https_client(&addr, &daemon.pki, "client", b"http/1.1");
    let head = http::Request::head("/metrics")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = http1.send(head, 1 << 20).await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.is_empty(), "{:?}", answer.body);
    let length: usize = answer.headers[http::header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 10_000, "{length}");
    let post = http::Request::post("/metrics")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let refused = http1.send(post, 1 << 20).await.unwrap();
    assert_eq!(refused.status, 405);
    assert_eq!(refused.headers[http::header::ALLOW], "GET, HEAD");

    let h2 = h2_sender(daemon.addr, &daemon.pki, "client").await;
    let (status, body) = h2_get(&h2, daemon.addr, "/nope").await.unwrap();
    assert_eq!(status, 404, "{body:?}");
    let mut sender = h2.clone();
    let request = http::Request::head(format!("https://localhost:{}/metrics", daemon.addr.port()))
        .body(http_body_util::Empty::new())
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .contains_key(http::header::CONTENT_LENGTH)
    );
    // gRPC is as it was on the same connection.
    daemon.echo_ok().await;
}

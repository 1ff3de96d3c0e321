//! HTTP/1.1 as a hostile peer speaks it, on both sides of the daemon: requests hyper refuses
//! on the `/metrics` port, and a push receiver or a secret store whose answers are broken.
//! Each gets a proper answer or a clear error; none panics, stops a task or costs anything
//! already accepted.

use std::{sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::harness::{assert_recovered, baseline};
use crate::support::{
    TestDaemon, TestPki,
    fake::answering_server,
    prometheus::{scraped, wait_scraped},
    run_vitalsd, write_config,
};

/// What an HTTP/1.1 connection of the default client, sent `request`, reads back within
/// `limit`: up to the head of a final answer, the daemon's close, or the limit.
async fn exchange(daemon: &TestDaemon, request: &[u8], limit: Duration) -> String {
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client_tls(daemon)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    // The daemon may answer and close before taking it all.
    let _ = tls.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&answer);
            if final_status(&text).is_some() && text.contains("\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The default client's TLS settings, offering HTTP/1.1.
fn client_tls(daemon: &TestDaemon) -> rustls::ClientConfig {
    let pki = &daemon.pki;
    let chain = vitals::tls::load_certs(&pki.path("client.crt")).unwrap();
    let key = vitals::tls::load_key(&pki.path("client.key")).unwrap();
    vitals::outbound::tls_config(&pki.path("ca.crt"), Some((chain, key)), &[b"http/1.1"]).unwrap()
}

/// The status of the last response in `answer` (after any `100 Continue`).
fn final_status(answer: &str) -> Option<u16> {
    answer
        .split("HTTP/1.1 ")
        .filter_map(|part| part.get(..3)?.parse::<u16>().ok())
        .filter(|&code| code >= 200)
        .last()
}

/// Malformed and abusive requests on the `/metrics` port each get their proper status,
/// promptly; a body held back is not waited for; 30,000 header names under a 1 MiB
/// `max_header_list_size` get 431; the daemon serves on and comes back to its baseline.
#[tokio::test]
async fn malformed_requests_get_proper_answers() {
    let daemon = TestDaemon::start("[server]\nmax_header_list_size = \"1MiB\"\n").await;
    let base = baseline(&daemon).await;
    let quick = Duration::from_secs(5);
    let many_names: String = (0..30_000).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "Content-Length: +1 (RUSTSEC-2021-0078)",
            b"GET /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: +1\r\n\r\nA".to_vec(),
            400,
        ),
        (
            "no Host",
            b"GET /metrics HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Host headers",
            b"GET /metrics HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare LF line ends",
            b"GET /metrics HTTP/1.1\nhost: x\n\n".to_vec(),
            200,
        ),
        (
            "Expect: 100-continue, body never sent",
            b"GET /metrics HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 10\r\n\r\n"
                .to_vec(),
            200,
        ),
        (
            "a body declared at 1 GiB",
            b"POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 1073741824\r\n\r\nabc".to_vec(),
            413,
        ),
        (
            "an absolute-form target",
            b"GET https://localhost/metrics HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec(),
            200,
        ),
        (
            "30,000 distinct header names",
            format!("GET /metrics HTTP/1.1\r\nhost: x\r\n{many_names}\r\n").into_bytes(),
            431,
        ),
        (
            "a chunk size of 2^64-1",
            b"POST /metrics HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1\r\nA\r\nffffffffffffffff\r\n"
                .to_vec(),
            405,
        ),
    ];
    for (what, request, want) in cases {
        let started = std::time::Instant::now();
        let answer = exchange(&daemon, &request, quick).await;
        assert_eq!(final_status(&answer), Some(want), "{what}: {answer:.200}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{what}: answered after {:?}",
            started.elapsed()
        );
        eprintln!("hostile: http1: {what}: {want} in {:?}", started.elapsed());
    }
    assert_recovered(&daemon, "http1_malformed_requests", base).await;
}

/// A body held back is not waited for: the page is answered at once and the connection
/// closed, so the hold costs no slot and ends with the answer.
#[tokio::test]
async fn a_trickled_body_is_not_waited_for() {
    let daemon = TestDaemon::start("").await;
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&daemon)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nA")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
        .await
        .expect("the daemon closes the connection")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(final_status(&answer), Some(200), "{answer:.200}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
}

/// The answer that panicked the hand-written client: a 1-byte chunk, then a chunk size of
/// 2^64-1.
const BAD_CHUNK: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nA\r\nffffffffffffffff\r\n";

/// A push receiver that answers with a chunk size of 2^64-1 is a failed push, retried: the
/// push task lives on (its retries keep counting), and a good receiver afterwards gets the
/// batches.
#[tokio::test]
async fn a_receiver_with_a_huge_chunk_size_is_retried() {
    let bad = answering_server(|_| BAD_CHUNK.to_vec(), None).await;
    let good = answering_server(|_| b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), None).await;
    let dropin = |addr| {
        format!(
            "[push]\nurl = \"http://{addr}/api/v1/write\"\ninterval = \"1s\"\ntimeout = \"2s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n"
        )
    };
    let daemon = TestDaemon::start(&dropin(bad)).await;
    let limit = Duration::from_secs(20);
    let retries = wait_scraped(&daemon, "vitals_push_retries_total", limit, |n| n >= 3.0).await;
    wait_scraped(&daemon, "vitals_push_retries_total", limit, |n| {
        n >= retries + 3.0
    })
    .await;
    assert!(
        !daemon.logs().iter().any(|l| l.contains("panicked")),
        "no task panicked"
    );
    daemon.rewrite_dropin(&dropin(good));
    daemon.signal("HUP");
    let sent = scraped(&daemon, "vitals_push_batches_sent_total")
        .await
        .unwrap_or(0.0);
    wait_scraped(&daemon, "vitals_push_batches_sent_total", limit, |n| {
        n >= sent + 2.0
    })
    .await;
}

/// A secret store that answers with a chunk size of 2^64-1: at start the daemon exits 69
/// (unavailable) saying what the store sent, not 101; at a reload the reload is refused and
/// the daemon serves on.
#[tokio::test]
async fn a_store_with_a_huge_chunk_size_is_unavailable() {
    let pki = TestPki::new();
    let store = answering_server(|_| BAD_CHUNK.to_vec(), Some(&pki)).await;
    let secrets = tempfile::tempdir().unwrap();
    crate::support::bao::secret_file(secrets.path(), "vault-token", "s.not-a-real-token");
    let vault = format!(
        "[secrets]\nstartup_timeout = \"2s\"\n[tls]\nkey = \"secret:tls_key\"\n[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n[[secrets.sources]]\nkind = \"vault\"\naddr = \"https://127.0.0.1:{}\"\nca_cert = \"{}\"\npath = \"devices/gw\"\ntoken = \"secret:vault-token\"\nfields = {{ tls_key = \"k\" }}\n",
        secrets.path().display(),
        store.port(),
        pki.path("ca.crt").display()
    );
    let dir = write_config(&pki, &vault);
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(69), "{out}");
    assert!(!out.contains("panicked"), "{out}");

    let daemon = TestDaemon::builder().pki(pki).start().await;
    daemon.rewrite_dropin(&vault);
    daemon.signal("HUP");
    daemon.wait_for_log(|l| l.contains("reload rejected")).await;
    daemon.echo_ok().await;
    assert!(
        !daemon.logs().iter().any(|l| l.contains("panicked")),
        "no task panicked"
    );
}

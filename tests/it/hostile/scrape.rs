//! Hostile scrapers of `GET /metrics`: huge headers, readers that never read, and a
//! thousand scrapes at once. Each is bounded like any other client, and a well-behaved one
//! is served throughout.

use std::{sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::harness::{Footprint, Prober, assert_recovered, baseline};
use crate::support::{
    TestDaemon,
    prometheus::{h2_get, h2_sender},
};

/// A TLS connection to the daemon as the default client, offering only `alpn`.
async fn tls_as_client(
    daemon: &TestDaemon,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let pki = &daemon.pki;
    let chain = vitals::tls::load_certs(&pki.path("client.crt")).unwrap();
    let key = vitals::tls::load_key(&pki.path("client.key")).unwrap();
    let tls =
        vitals::outbound::tls_config(&pki.path("ca.crt"), Some((chain, key)), &[alpn]).unwrap();
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn http1_tls(daemon: &TestDaemon) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_as_client(daemon, b"http/1.1").await
}

/// A request with 64 KiB of headers (the limit is 16 KiB) gets 431 and a close, ten
/// times over; memory and descriptors come back.
#[tokio::test]
async fn huge_headers() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    for _ in 0..10 {
        let mut tls = http1_tls(&daemon).await;
        let filler = "a".repeat(1024);
        let mut request = String::from("GET /metrics HTTP/1.1\r\nhost: localhost\r\n");
        for i in 0..64 {
            request.push_str(&format!("x-filler-{i}: {filler}\r\n"));
        }
        request.push_str("\r\n");
        // The daemon may close before taking it all.
        let _ = tls.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }
    assert_recovered(&daemon, "scrape_huge_headers", base).await;
}

/// Twenty connections each ask for the page fifty times in a row and never read: the
/// daemon stops reading them once their answers back up, an established client is served
/// all along, a new scrape is answered, and once they hang up everything comes back.
#[tokio::test]
async fn readers_that_never_read() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let prober = Prober::start(&daemon).await;
    let request = "GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n".repeat(50);
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let mut tls = http1_tls(&daemon).await;
        tls.write_all(request.as_bytes()).await.unwrap();
        stuck.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = h2_sender(daemon.addr, &daemon.pki, "client").await;
    let (status, _) = h2_get(&client, daemon.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200, "a scrape is answered while others are stuck");
    let during = Footprint::of(&daemon);
    prober.finish("scrape_readers_that_never_read").await;
    drop((stuck, client));
    let after = assert_recovered(&daemon, "scrape_readers_that_never_read", base).await;
    eprintln!(
        "hostile: scrape_readers_that_never_read: rss with 20 stuck readers {} KiB (baseline {} KiB, after {} KiB)",
        during.rss_kib, base.rss_kib, after.rss_kib
    );
}

/// A thousand scrapes at once over eight HTTP/2 connections (125 streams each).
async fn thousand_scrapes(daemon: &TestDaemon) -> (usize, usize) {
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(h2_sender(daemon.addr, &daemon.pki, "client").await);
    }
    let mut scrapes = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let sender = clients[i % clients.len()].clone();
        let addr = daemon.addr;
        scrapes.spawn(async move {
            tokio::time::timeout(Duration::from_secs(30), async move {
                h2_get(&sender, addr, "/metrics")
                    .await
                    .map(|(status, _)| status.as_u16())
            })
            .await
        });
    }
    let (mut ok, mut busy) = (0, 0);
    while let Some(done) = scrapes.join_next().await {
        match done.unwrap() {
            Ok(Ok(200)) => ok += 1,
            Ok(Ok(503)) => busy += 1,
            other => panic!("a scrape got {other:?}"),
        }
    }
    (ok, busy)
}

/// A thousand scrapes at once over eight HTTP/2 connections, three times: each is
/// answered 200 or 503 (at most 16 pages are in flight), none hangs, an established client
/// is served throughout, the peak stays bounded, and the last burst leaves the daemon no
/// larger than the one before did (glibc keeps what a burst freed in its arenas, so the
/// first bursts set the level; a leak would climb with each).
#[tokio::test]
async fn a_thousand_parallel_scrapes() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let prober = Prober::start(&daemon).await;
    thousand_scrapes(&daemon).await;
    let (ok, busy) = thousand_scrapes(&daemon).await;
    let first = super::harness::settled(&daemon).await;
    let (ok2, busy2) = thousand_scrapes(&daemon).await;
    let peak = Footprint::of(&daemon).hwm_kib;
    prober.finish("scrape_thousand_parallel").await;
    eprintln!(
        "hostile: scrape_thousand_parallel: {ok} + {ok2} answered, {busy} + {busy2} told 503 (bursts 2 and 3); rss {} KiB at the baseline, {} KiB after burst 2; peak {peak} KiB",
        base.rss_kib, first.rss_kib
    );
    assert_recovered(&daemon, "scrape_thousand_parallel", first).await;
    assert!(ok >= 16 && ok2 >= 16, "{ok}, {ok2} scrapes answered");
    assert!(
        peak < base.rss_kib + 32 * 1024,
        "peak RSS {peak} KiB, baseline {} KiB",
        base.rss_kib
    );
}

//! Connections that outlive their credentials: a client certificate that reaches its
//! notAfter while connected, one a reloaded CRL revokes, and a client CA taken away by a
//! reload. Each such connection gets a graceful GOAWAY and is closed; the others serve on.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use vitals::{
    pki::{Leaf, Usage},
    tls::ClientAuth,
};

use crate::support::{TestDaemon, TestPki, raw, raw::assert_health_serving};

/// A raw HTTP/2 connection as the client certificate `name` of the daemon's PKI.
async fn connect_as(daemon: &TestDaemon, name: &str) -> raw::RawConn {
    let tls = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path(&format!("{name}.crt")),
        key: &daemon.pki.path(&format!("{name}.key")),
    });
    raw::connect(daemon.addr, tls).await
}

/// How many connections the daemon closed for `why` (expired, reverified).
async fn credential_closes(daemon: &TestDaemon, why: &str) -> u64 {
    let server = daemon.snapshot().await.server.unwrap();
    let found = server.credential_closes.iter().find(|c| c.reason == why);
    found.map_or(0, |c| c.count)
}

/// A client certificate valid for 3 more seconds: its connection serves, and is closed
/// (GOAWAY, then the close) within a second of its notAfter.
#[tokio::test]
async fn connection_closed_at_certificate_expiry() {
    let pki = Arc::new(TestPki::new());
    let mut leaf = Leaf::new("short", &["spiffe://test.vitals/short"], Usage::Client, 1);
    leaf.not_after = SystemTime::now() + Duration::from_secs(3);
    pki.issue("short", &leaf);
    let daemon = TestDaemon::builder().pki(pki).start().await;
    let started = Instant::now();
    let conn = connect_as(&daemon, "short").await;
    assert_health_serving_on(&conn).await;
    let (closed_at, _) = tokio::time::timeout(Duration::from_secs(10), conn.closed)
        .await
        .expect("closed once the certificate expired")
        .unwrap();
    let after = closed_at - started;
    // rcgen writes whole seconds: notAfter is 2 to 3 s after `started`.
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );
    assert_eq!(credential_closes(&daemon, "expired").await, 1);
    eprintln!(
        "hostile: connection_closed_at_certificate_expiry: closed {after:?} after connecting"
    );
}

async fn assert_health_serving_on(conn: &raw::RawConn) {
    let conn = raw::RawConn {
        send: conn.send.clone(),
        closed: tokio::spawn(async { (Instant::now(), Ok(())) }),
    };
    assert_health_serving(conn).await;
}

/// A reload that adds a CRL revoking one client's certificate closes that client's open
/// connection (and refuses its next handshake, counted as "revoked"); another client's
/// connection serves on.
#[tokio::test]
async fn reload_with_crl_closes_revoked_connections() {
    let pki = Arc::new(TestPki::new());
    let mut leaf = Leaf::new(
        "revokee",
        &["spiffe://test.vitals/revokee"],
        Usage::Client,
        1,
    );
    leaf.serial = Some(4242);
    pki.issue("revokee", &leaf);
    let daemon = TestDaemon::builder().pki(pki.clone()).start().await;
    let revokee = connect_as(&daemon, "revokee").await;
    let client = connect_as(&daemon, "client").await;
    assert_health_serving_on(&revokee).await;
    let crl = pki.path("revoked.crl");
    std::fs::write(&crl, pki.ca.revoke(&[4242]).unwrap()).unwrap();
    daemon.rewrite_dropin(&format!("[tls]\ncrl = [\"{}\"]\n", crl.display()));
    daemon.signal("HUP");
    let (_, ended) = tokio::time::timeout(Duration::from_secs(10), revokee.closed)
        .await
        .expect("the revoked client's connection is closed")
        .unwrap();
    eprintln!("hostile: reload_with_crl: the revoked connection ended: {ended:?}");
    assert_health_serving_on(&client).await;
    let tls = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("revokee.crt"),
        key: &daemon.pki.path("revokee.key"),
    });
    let again = super::harness::try_call(&daemon, tls).await;
    assert!(again.is_err(), "a revoked certificate got through");
    assert_eq!(credential_closes(&daemon, "reverified").await, 1);
    let server = daemon.snapshot().await.server.unwrap();
    let revoked = server
        .handshakes_refused
        .iter()
        .find(|r| r.reason == "revoked");
    assert!(revoked.is_some_and(|r| r.count >= 1), "{server:?}");
}

/// A reload that replaces the client CA closes every connection whose certificate the new
/// CA did not issue.
#[tokio::test]
async fn reload_with_new_client_ca_closes_old_connections() {
    let daemon = TestDaemon::start("").await;
    let old = connect_as(&daemon, "client").await;
    let other = TestPki::new();
    let ca = daemon.pki.path("other-ca.crt");
    std::fs::copy(other.path("ca.crt"), &ca).unwrap();
    daemon.rewrite_dropin(&format!("[tls]\nclient_ca = \"{}\"\n", ca.display()));
    daemon.signal("HUP");
    let (_, ended) = tokio::time::timeout(Duration::from_secs(10), old.closed)
        .await
        .expect("the connection from the old CA is closed")
        .unwrap();
    eprintln!("hostile: reload_with_new_client_ca: the old connection ended: {ended:?}");
    daemon
        .wait_for_log(|l| l.contains("no longer verifies"))
        .await;
}

/// An HTTP/1.1 connection of `name` (TLS, ALPN http/1.1) that has sent `sent`.
async fn http1_as(
    daemon: &TestDaemon,
    name: &str,
    sent: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let pki = &daemon.pki;
    let chain = vitals::tls::load_certs(&pki.path(&format!("{name}.crt"))).unwrap();
    let key = vitals::tls::load_key(&pki.path(&format!("{name}.key"))).unwrap();
    let tls = vitals::outbound::tls_config(&pki.path("ca.crt"), Some((chain, key)), &[b"http/1.1"])
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(sent).await.unwrap();
    tls
}

/// How long until the daemon closes `tls` (reading and dropping what it sends), at most
/// `limit`.
async fn closed_within(
    mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    tokio::time::timeout(limit, async {
        let mut sink = [0u8; 4096];
        while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// HTTP/1.1 holds of a client a reload's CRL revokes (an idle keep-alive connection, one
/// half-way through its request head, one waiting on `Expect: 100-continue`, one holding
/// back its body; once kept open past 105 s) are all closed within seconds of the reload.
#[tokio::test]
async fn revocation_closes_http1_holds() {
    let pki = Arc::new(TestPki::new());
    let mut leaf = Leaf::new(
        "revokee",
        &["spiffe://test.vitals/revokee"],
        Usage::Client,
        1,
    );
    leaf.serial = Some(4343);
    pki.issue("revokee", &leaf);
    let daemon = TestDaemon::builder().pki(pki.clone()).start().await;
    let holds = [
        ("idle keep-alive", &b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n"[..]),
        ("half a head", b"GET /metrics HTTP/1.1\r\nhost: x\r\n"),
        (
            "Expect: 100-continue",
            b"POST /metrics HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 100\r\n\r\n",
        ),
        (
            "a body held back",
            b"POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nA",
        ),
    ];
    let mut open = Vec::new();
    for (what, sent) in holds {
        open.push((what, http1_as(&daemon, "revokee", sent).await));
    }
    let crl = pki.path("revoked.crl");
    std::fs::write(&crl, pki.ca.revoke(&[4343]).unwrap()).unwrap();
    daemon.rewrite_dropin(&format!("[tls]\ncrl = [\"{}\"]\n", crl.display()));
    daemon.signal("HUP");
    for (what, tls) in open {
        let took = closed_within(tls, Duration::from_secs(10)).await;
        eprintln!("hostile: revocation_http1: {what}: closed after {took:?}");
        assert!(took.is_some(), "{what}: still open 10 s after the reload");
    }
}

/// A stop with an HTTP/1.1 client half-way through its request head does not wait out
/// `server.drain_timeout` (10 s here): the daemon exits within the closing grace.
#[tokio::test]
async fn a_stop_does_not_wait_for_a_half_sent_http1_request() {
    let mut daemon = TestDaemon::start("").await;
    let held = http1_as(&daemon, "client", b"GET /metrics HTTP/1.1\r\nhost: x\r\n").await;
    let started = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    let took = started.elapsed();
    eprintln!("hostile: stop_with_http1_half_head: exited after {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
    drop(held);
}

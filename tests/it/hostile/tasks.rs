//! The daemon's long-lived tasks under panics (made by `VITALS_TEST_PANIC`, which only debug
//! builds read): each is logged once with its name, counted, run again, and keeps what it
//! had; one that keeps panicking turns readiness NOT_SERVING, naming it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use vitals::proto::health::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::support::{
    TestDaemon, eventually,
    prometheus::{scraped, wait_scraped},
};

/// A remote_write receiver on loopback that answers 204 and counts the requests it read.
async fn counting_receiver() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let addr = crate::support::fake::answering_server(
        move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
        },
        None,
    )
    .await;
    (format!("http://{addr}/api/v1/write"), count)
}

/// The push task panics as it starts: it is said once with its name, counted in
/// `vitals_task_restarts_total`, run again a second later, and pushes; readiness stays
/// SERVING (one panic is not failing).
#[tokio::test]
async fn a_panicking_task_is_restarted() {
    let (url, pushes) = counting_receiver().await;
    let daemon = TestDaemon::builder()
        .dropin(format!("[push]\nurl = \"{url}\"\ninterval = \"1s\"\n"))
        .env("VITALS_TEST_PANIC", "push=1")
        .start()
        .await;
    let limit = Duration::from_secs(15);
    wait_scraped(
        &daemon,
        "vitals_task_restarts_total{task=\"push\"}",
        limit,
        |n| n == 1.0,
    )
    .await;
    eventually(limit, || async {
        (pushes.load(Ordering::Relaxed) >= 2)
            .then_some(())
            .ok_or_else(|| "no pushes yet".to_string())
    })
    .await;
    let said = daemon
        .logs()
        .iter()
        .filter(|l| l.contains("a daemon task panicked") && l.contains("\"push\""))
        .count();
    assert_eq!(said, 1, "{:?}", daemon.logs());
    let status = daemon
        .health()
        .await
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    assert_eq!(
        scraped(&daemon, "vitals_task_restarts_total{task=\"push\"}").await,
        Some(1.0)
    );
}

/// The file-watching task panics every time: after the third panic readiness is
/// NOT_SERVING with the reason naming the task, and the daemon still answers echo.
#[tokio::test]
async fn a_task_that_keeps_panicking_fails_readiness() {
    let daemon = TestDaemon::builder()
        .env("VITALS_TEST_PANIC", "files=1000")
        .start()
        .await;
    eventually(Duration::from_secs(20), || async {
        let status = daemon
            .health()
            .await
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .status;
        (status == ServingStatus::NotServing as i32)
            .then_some(())
            .ok_or(format!("readiness is {status}"))
    })
    .await;
    daemon
        .wait_for_log(|l| l.contains("the files task keeps failing"))
        .await;
    daemon.echo_ok().await;
}

/// A Vault that says its token lives 2^64-1 seconds (the TTL that once overflowed
/// `Instant + Duration` and killed the task that also follows the TLS files): the TTL is
/// bounded where it enters, the refresh keeps asking the store, and a certificate renamed
/// onto `tls.cert` is still noticed.
#[tokio::test]
async fn an_endless_token_ttl_kills_nothing() {
    let pki = std::sync::Arc::new(crate::support::TestPki::new());
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let store = crate::support::fake::answering_server(
        move |head| {
            let path = head.split(' ').nth(1).unwrap_or_default().to_string();
            let body = if path.starts_with("/v1/auth/token/lookup-self") {
                r#"{"data":{"ttl":18446744073709551615,"renewable":true}}"#.to_string()
            } else if path.starts_with("/v1/secret/metadata/") {
                counted.fetch_add(1, Ordering::Relaxed);
                r#"{"data":{"current_version":1}}"#.to_string()
            } else if path.starts_with("/v1/secret/data/") {
                r#"{"data":{"data":{"k":"echo-token-0123456789"},"metadata":{"version":1}}}"#
                    .to_string()
            } else {
                return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec();
            };
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        },
        Some(&pki),
    )
    .await;
    let secrets = tempfile::tempdir().unwrap();
    crate::support::bao::secret_file(secrets.path(), "vault-token", "s.fake-token");
    let daemon = TestDaemon::builder()
        .pki(pki.clone())
        .dropin(format!(
            "[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n[[secrets.sources]]\nkind = \"vault\"\naddr = \"https://127.0.0.1:{}\"\nca_cert = \"{}\"\npath = \"devices/gw\"\ntoken = \"secret:vault-token\"\nrefresh_interval = \"1s\"\nfields = {{ echo-token = \"k\" }}\n[[auth.bearer]]\nmethods = [\"vitals.echo.v1.Echo/*\"]\nkind = \"opaque\"\ntokens = [\"secret:echo-token\"]\n",
            secrets.path().display(),
            store.port(),
            pki.path("ca.crt").display()
        ))
        .start()
        .await;
    let before = asked.load(Ordering::Relaxed);
    eventually(Duration::from_secs(15), || async {
        (asked.load(Ordering::Relaxed) >= before + 3)
            .then_some(())
            .ok_or_else(|| "the refresh stopped asking".to_string())
    })
    .await;
    let (cert, key) = pki.issue(
        "next",
        &vitals::pki::Leaf::new(
            "renamed",
            &["localhost", "127.0.0.1"],
            vitals::pki::Usage::Server,
            30,
        ),
    );
    std::fs::rename(&cert, pki.path("server.crt")).unwrap();
    std::fs::rename(&key, pki.path("server.key")).unwrap();
    daemon
        .wait_for_log(|l| l.contains("TLS files changed on disk"))
        .await;
    assert!(
        !daemon.logs().iter().any(|l| l.contains("panicked")),
        "{:?}",
        daemon.logs()
    );
}

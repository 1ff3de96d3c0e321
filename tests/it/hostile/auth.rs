//! Refused client certificates: each kind is refused, the refusals are logged at a bounded
//! pace, and the daemon is as before.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use vitals::{
    pki::{Leaf, Usage},
    tls::ClientAuth,
};

use super::harness::{assert_recovered, baseline, try_call};
use crate::support::{TestDaemon, TestPki, eventually};

/// A PKI with the refused kinds of client certificate besides the good one.
fn refusal_pki() -> Arc<TestPki> {
    let pki = Arc::new(TestPki::new());
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let mut expired = Leaf::new("old", &["spiffe://test.vitals/old"], Usage::Client, 1);
    expired.not_before = now - 7 * day;
    expired.not_after = now - day;
    pki.issue("expired", &expired);
    let mut future = Leaf::new("future", &["spiffe://test.vitals/future"], Usage::Client, 1);
    future.not_before = now + day;
    future.not_after = now + 30 * day;
    pki.issue("notyet", &future);
    pki.issue(
        "serveronly",
        &Leaf::new("s", &["serveronly.test"], Usage::Server, 1),
    );
    pki
}

/// A certificate that is not valid yet (not_before tomorrow) is refused, and the refusal
/// is logged.
#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let daemon = TestDaemon::builder().pki(refusal_pki()).start().await;
    let config = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("notyet.crt"),
        key: &daemon.pki.path("notyet.key"),
    });
    let result = try_call(&daemon, config).await;
    assert!(result.is_err(), "a not-yet-valid certificate got through");
    eventually(Duration::from_secs(3), || async {
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("TLS handshake refused") && l.contains("not valid yet"))
            .then_some(())
            .ok_or_else(|| format!("no `not valid yet` refusal logged: {:?}", daemon.logs()))
    })
    .await;
}

/// Every kind of refused client certificate, 10 times each (no certificate, another CA,
/// expired, not yet valid, no clientAuth usage): all refused, and the daemon as before. The
/// refusals are logged at most once a second (the client sets their pace), with the count
/// of the ones held back.
#[tokio::test]
async fn tls_refusals() {
    let daemon = TestDaemon::builder().pki(refusal_pki()).start().await;
    let other = TestPki::new();
    let base = baseline(&daemon).await;
    let ca = daemon.pki.path("ca.crt");
    let cert = |dir: &TestPki, name: &str| {
        vitals::tls::client_config(
            &ca,
            ClientAuth::Certificate {
                cert: &dir.path(&format!("{name}.crt")),
                key: &dir.path(&format!("{name}.key")),
            },
        )
        .unwrap()
    };
    let kinds = [
        ("anonymous", daemon.client_tls(ClientAuth::Anonymous)),
        ("other CA", cert(&other, "client")),
        ("expired", cert(&daemon.pki, "expired")),
        ("not yet valid", cert(&daemon.pki, "notyet")),
        ("no clientAuth", cert(&daemon.pki, "serveronly")),
    ];
    let mut tries = 0;
    let started = Instant::now();
    for (why, config) in &kinds {
        for _ in 0..10 {
            let result = try_call(&daemon, config.clone()).await;
            assert!(result.is_err(), "{why}: the call went through");
            tries += 1;
        }
    }
    let seconds = started.elapsed().as_secs() as usize;
    eventually(Duration::from_secs(5), || async {
        let lines: Vec<serde_json::Value> = daemon
            .log_json()
            .into_iter()
            .filter(|l| l["fields"]["message"] == "TLS handshake refused")
            .collect();
        let suppressed: u64 = lines
            .iter()
            .filter_map(|l| l["fields"]["suppressed"].as_u64())
            .sum();
        (!lines.is_empty() && lines.len() <= seconds + 2)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "{} refusal lines ({suppressed} held back) for {tries} refusals in {seconds}s",
                    lines.len()
                )
            })
    })
    .await;
    assert_recovered(&daemon, "tls_refusals", base).await;
}

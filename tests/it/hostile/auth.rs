//! Refused client certificates: each kind is refused, the refusals are logged at a bounded
//! pace, and the daemon is as before. Short and empty secrets, and identities that only
//! look granted (a longer path segment, a CN beside a SAN).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use base64::Engine;
use vitals::{
    pki::{Leaf, Usage},
    proto::echo::EchoRequest,
    tls::ClientAuth,
};

use super::harness::{assert_recovered, baseline, try_call};
use crate::support::{TestDaemon, TestPki, bao::secret_file, eventually};

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
    // Each reason is counted: in the metrics, and in the held-back summaries of the lines.
    let server = daemon.snapshot().await.server.unwrap();
    let counted: Vec<_> = (server.handshakes_refused.iter())
        .map(|r| (r.reason.as_str(), r.count))
        .collect();
    for reason in [
        "no certificate",
        "unknown CA",
        "expired",
        "not yet valid",
        "wrong EKU",
    ] {
        assert!(
            counted.iter().any(|(r, n)| *r == reason && *n == 10),
            "{reason}: {counted:?}"
        );
    }
    // The refusals held back since the last line are summed up within 5 s, by reason.
    daemon
        .wait_for_log(|l| l.contains("TLS handshakes refused:"))
        .await;
    let summaries: Vec<String> = daemon
        .log_json()
        .iter()
        .filter_map(|l| {
            l["fields"]["suppressed_reasons"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|s| s != "-")
        .collect();
    eprintln!("hostile: tls_refusals: counted {counted:?}; held-back summaries {summaries:?}");
    assert!(
        summaries.iter().any(|s| s.contains('=')),
        "no summary counts reasons: {summaries:?}"
    );
    assert_recovered(&daemon, "tls_refusals", base).await;
}

/// A config with an HS256 bearer whose key is the secret file `jwt-key` in `dir`.
fn hs256_dropin(dir: &std::path::Path) -> String {
    format!(
        "[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n[[auth.bearer]]\nmethods = [\"vitals.echo.v1.Echo/*\"]\nkind = \"jwt\"\nalgorithm = \"HS256\"\nkey = \"secret:jwt-key\"\n",
        dir.display()
    )
}

/// Runs vitalsd on `dropin` to its exit; the exit code and what it printed.
fn run_with(dropin: &str) -> (Option<i32>, String) {
    let pki = TestPki::new();
    let dir = crate::support::write_config(&pki, dropin);
    let config = dir.path().join("vitalsd.toml");
    crate::support::run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path())
}

/// An HS256 key file holding only a newline, or 31 bytes, stops the start with exit 78 and a
/// message naming the secret (never its value); so does an empty opaque token.
#[tokio::test]
async fn short_or_empty_secrets_exit_78() {
    let secrets = tempfile::tempdir().unwrap();
    let dropin = hs256_dropin(secrets.path());
    secret_file(secrets.path(), "jwt-key", "\n");
    let (code, out) = run_with(&dropin);
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("secret `jwt-key` from files in"), "{out}");
    assert!(out.contains("is empty"), "{out}");
    let short = "k".repeat(31);
    secret_file(secrets.path(), "jwt-key", &short);
    let (code, out) = run_with(&dropin);
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("secret `jwt-key` is 31 bytes"), "{out}");
    assert!(!out.contains(&short), "the key was printed: {out}");
    secret_file(secrets.path(), "token", "");
    let (code, out) = run_with(&format!(
        "[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n[[auth.bearer]]\nmethods = [\"*\"]\nkind = \"opaque\"\ntokens = [\"secret:token\"]\n",
        secrets.path().display()
    ));
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("secret `token`") && out.contains("is empty"),
        "{out}"
    );
}

/// A reload whose HS256 key became too short is rejected: the old key keeps working.
#[tokio::test]
async fn short_hmac_key_reload_is_rejected() {
    let secrets = tempfile::tempdir().unwrap();
    let key = "k".repeat(32);
    secret_file(secrets.path(), "jwt-key", &key);
    let daemon = TestDaemon::start(&hs256_dropin(secrets.path())).await;
    let token = {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let exp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let signing = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256"}"#),
            b64(format!(r#"{{"exp":{exp}}}"#).as_bytes())
        );
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes()),
            signing.as_bytes(),
        );
        format!("{signing}.{}", b64(tag.as_ref()))
    };
    let call = || async {
        let mut request = tonic::Request::new(EchoRequest::default());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        daemon.echo().await.echo(request).await.map(|_| ())
    };
    call()
        .await
        .expect("the token signed with the key is served");
    secret_file(secrets.path(), "jwt-key", "short\n");
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reload rejected") && l.contains("is 5 bytes"))
        .await;
    call().await.expect("the old policy is kept");
}

/// A prefix rule `…/ops*` grants `…/ops/alice` but not `…/opsevil`; a certificate whose
/// CN names a granted identity but which carries an IP SAN gets no identity from its CN.
#[tokio::test]
async fn identity_prefixes_and_cn_fallback() {
    let pki = Arc::new(TestPki::new());
    pki.issue(
        "alice",
        &Leaf::new("a", &["spiffe://test.vitals/ops/alice"], Usage::Client, 1),
    );
    pki.issue(
        "evil",
        &Leaf::new("e", &["spiffe://test.vitals/opsevil"], Usage::Client, 1),
    );
    pki.issue("cn-only", &Leaf::new("trusted-cn", &[], Usage::Client, 1));
    pki.issue(
        "cn-and-ip",
        &Leaf::new("trusted-cn", &["10.0.0.1"], Usage::Client, 1),
    );
    let dropin = "[[auth.rules]]\nidentities = [\"spiffe://test.vitals/ops*\", \"trusted-cn\"]\nmethods = [\"vitals.metrics.v1.Metrics/*\"]\n";
    let daemon = TestDaemon::builder().pki(pki).dropin(dropin).start().await;
    let snapshot = |who: &'static str| {
        let dial = daemon.dial_as(who);
        async move {
            let channel = dial.connect().await.unwrap();
            vitals::proto::metrics::metrics_client::MetricsClient::new(channel)
                .snapshot(vitals::proto::metrics::SnapshotRequest {})
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    assert_eq!(snapshot("alice").await, Ok(()));
    assert_eq!(snapshot("cn-only").await, Ok(()));
    assert_eq!(snapshot("evil").await, Err(tonic::Code::PermissionDenied));
    assert_eq!(
        snapshot("cn-and-ip").await,
        Err(tonic::Code::PermissionDenied)
    );
}

/// 500 denied calls in a burst from one identity: one denial line, the rest held back and
/// counted in the metrics; the next denial after a second comes after a summary line
/// ("suppressed 499", by status code). An audited call of another identity in the middle
/// of the flood is logged all the same.
#[tokio::test]
async fn denial_flood_is_rate_limited_per_identity() {
    let pki = Arc::new(TestPki::new());
    pki.issue(
        "nogrant",
        &Leaf::new("n", &["spiffe://test.vitals/nogrant"], Usage::Client, 1),
    );
    let daemon = TestDaemon::builder()
        .pki(pki)
        .dropin("[auth]\naudit = [\"vitals.echo.v1.Echo/Echo\"]\n")
        .start()
        .await;
    let denied = daemon.dial_as("nogrant").connect().await.unwrap();
    let mut denied = vitals::proto::echo::echo_client::EchoClient::new(denied);
    let mut audited = daemon.echo().await;
    let started = Instant::now();
    for i in 0..500 {
        let err = denied.echo(EchoRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        if i == 250 {
            audited.echo(EchoRequest::default()).await.unwrap();
        }
    }
    let burst = started.elapsed();
    let lines = |decision: &str| {
        daemon
            .log_json()
            .into_iter()
            .filter(|l| l["target"] == "vitals::audit" && l["fields"]["audit_decision"] == decision)
            .count()
    };
    let server = daemon.snapshot().await.server.unwrap();
    let written = 500 - server.audit_lines_suppressed as usize;
    assert!(
        written <= burst.as_secs() as usize + 2,
        "{written} denial lines in {burst:?}"
    );
    // The audited call's line was not held back by the flood.
    daemon
        .wait_for_log(|l| l.contains("\"audit_decision\":\"allow\""))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    denied.echo(EchoRequest::default()).await.unwrap_err();
    daemon
        .wait_for_log(|l| {
            l.contains("\"audit_decision\":\"suppressed\"") && l.contains("PERMISSION_DENIED=")
        })
        .await;
    eprintln!(
        "hostile: denial_flood: 500 denials in {} ms: {} deny lines, {} suppressed, {} summary lines",
        burst.as_millis(),
        lines("deny"),
        server.audit_lines_suppressed,
        lines("suppressed")
    );
    assert_eq!(lines("allow"), 1);
}

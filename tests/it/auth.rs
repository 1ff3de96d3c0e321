//! Authorization against the real daemon: the ACL by certificate identity, bearer tokens
//! (opaque and JWT), the audit lines, request ids and trace context, and panic containment.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use tonic::{Code, Request};
use vitals::{
    pki::{Leaf, Usage},
    proto::{
        echo::{EchoRequest, echo_client::EchoClient},
        health::{HealthCheckRequest, health_client::HealthClient},
        metrics::{SnapshotRequest, metrics_client::MetricsClient},
    },
};

use crate::support::{TestDaemon, TestPki, bao::secret_file, eventually};

const PROBER: &str = "spiffe://test.vitals/prober";

/// A PKI with an extra client certificate, "prober", whose identity is PROBER.
fn pki_with_prober() -> Arc<TestPki> {
    let pki = Arc::new(TestPki::new());
    pki.issue("prober", &Leaf::new("prober", &[PROBER], Usage::Client, 1));
    pki
}

async fn metrics_as(daemon: &TestDaemon, who: &str) -> Result<(), tonic::Status> {
    let channel = daemon.dial_as(who).connect().await.unwrap();
    MetricsClient::new(channel)
        .snapshot(SnapshotRequest {})
        .await
        .map(|_| ())
}

/// An identity with no grant may call health but gets PERMISSION_DENIED on metrics, with
/// one audit line naming it, the method and the reason.
#[tokio::test]
async fn ungranted_identity_is_denied_and_audited() {
    let daemon = TestDaemon::builder().pki(pki_with_prober()).start().await;
    let channel = daemon.dial_as("prober").connect().await.unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    let err = metrics_as(&daemon, "prober").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let audits = daemon.wait_for_lines("vitals::audit").await;
    assert_eq!(audits.len(), 1, "{audits:#?}");
    let fields = &audits[0]["fields"];
    assert_eq!(fields["audit_decision"], "deny");
    assert_eq!(fields["audit_identity"], PROBER);
    assert_eq!(
        fields["audit_method"],
        "/vitals.metrics.v1.Metrics/Snapshot"
    );
    assert_eq!(fields["audit_code"], "PERMISSION_DENIED");
    // The default client (granted everything in the test base config) is served.
    metrics_as(&daemon, "client").await.unwrap();
}

/// A prefix rule grants every identity under it.
#[tokio::test]
async fn prefix_rule_grants_a_fleet() {
    let dropin = "[[auth.rules]]\nidentities = [\"spiffe://test.vitals/*\"]\nmethods = [\"vitals.metrics.v1.Metrics/*\"]\n";
    let daemon = TestDaemon::builder()
        .pki(pki_with_prober())
        .dropin(dropin)
        .start()
        .await;
    metrics_as(&daemon, "prober").await.unwrap();
    // The grant covers metrics only.
    let channel = daemon.dial_as("prober").connect().await.unwrap();
    let err = EchoClient::new(channel)
        .echo(EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// A reload that grants access takes effect without a restart.
#[tokio::test]
async fn reload_grants_access() {
    let daemon = TestDaemon::builder().pki(pki_with_prober()).start().await;
    assert_eq!(
        metrics_as(&daemon, "prober").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    daemon.rewrite_dropin(&format!(
        "[[auth.rules]]\nidentities = [\"{PROBER}\"]\nmethods = [\"vitals.metrics.v1.Metrics/Snapshot\"]\n"
    ));
    daemon.signal("HUP");
    eventually(Duration::from_secs(5), || async {
        metrics_as(&daemon, "prober")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}

/// An unknown method pattern in the ACL is a config error naming the file and the key (the
/// drop-in's rule comes after the main file's: grants accumulate).
#[tokio::test]
async fn unknown_method_pattern_is_a_config_error() {
    let pki = TestPki::new();
    let dir = crate::support::write_config(
        &pki,
        "[[auth.rules]]\nidentities = [\"*\"]\nmethods = [\"vitals.echo.v1.Echo/Shout\"]\n",
    );
    let config = dir.path().join("vitalsd.toml");
    let (code, out) =
        crate::support::run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    let dropin = dir.path().join("vitalsd.d/50-test.toml");
    assert!(
        out.contains(&format!(
            "{}: `auth.rules[1].methods`: `vitals.echo.v1.Echo/Shout` is not a method",
            dropin.display()
        )),
        "{out}"
    );
}

fn with_bearer<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// An opaque bearer token: missing or wrong is UNAUTHENTICATED, right is served; the audit
/// lines never carry the token.
#[tokio::test]
async fn opaque_bearer_token() {
    let pki = Arc::new(TestPki::new());
    let secrets = tempfile::tempdir().unwrap();
    let token = "opaque-token-8f3a9c1e27";
    secret_file(secrets.path(), "metrics-token", token);
    let dropin = format!(
        "[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n[[auth.bearer]]\nmethods = [\"vitals.metrics.v1.Metrics/*\"]\nkind = \"opaque\"\ntokens = [\"secret:metrics-token\"]\n",
        secrets.path().display()
    );
    let daemon = TestDaemon::builder().pki(pki).dropin(&dropin).start().await;
    let mut metrics = daemon.metrics().await;
    for bad in [None, Some("wrong-token-8f3a9c1e27")] {
        let err = metrics
            .snapshot(with_bearer(SnapshotRequest {}, bad))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad:?}: {err:?}");
    }
    let snapshot = metrics
        .snapshot(with_bearer(SnapshotRequest {}, Some(token)))
        .await
        .unwrap()
        .into_inner();
    // Both denials were counted.
    let stats = crate::support::method_stats(&snapshot, "/vitals.metrics.v1.Metrics/Snapshot");
    let unauthenticated = stats
        .statuses
        .iter()
        .find(|s| s.code == "UNAUTHENTICATED")
        .map(|s| s.count);
    assert_eq!(unauthenticated, Some(2));
    // Health needs no token.
    daemon
        .health()
        .await
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    // Denials of one identity are logged one a second at most; the other is counted.
    let logs = daemon.logs();
    let lines = logs
        .iter()
        .filter(|l| l.contains("\"audit_decision\":\"deny\""))
        .count() as u64;
    let held = snapshot.server.as_ref().unwrap().audit_lines_suppressed;
    assert!(
        lines >= 1 && lines + held == 2,
        "{lines} lines, {held} held back"
    );
    assert!(
        !logs
            .iter()
            .any(|l| l.contains(token) || l.contains("wrong-token-8f3a9c1e27"))
    );
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// JWTs (ES256, issuer and audience required): a valid one is served; expired, not yet
/// valid, wrong audience, wrong issuer, `alg: none`, signed with another key, and the
/// ES256-to-HS256 switch with the public key as the HMAC secret are each UNAUTHENTICATED.
#[tokio::test]
async fn jwt_bearer_tokens() {
    let rng = ring::rand::SystemRandom::new();
    let sign_with = |key: &rcgen::KeyPair, header: &str, claims: &str| {
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let signing = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        );
        let sig = signer.sign(&rng, signing.as_bytes()).unwrap();
        format!("{signing}.{}", b64url(sig.as_ref()))
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let public = key.public_key_pem();
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "jwt-key", &public);
    let dropin = format!(
        "[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n[[auth.bearer]]\nmethods = [\"vitals.echo.v1.Echo/*\"]\nkind = \"jwt\"\nalgorithm = \"ES256\"\nkey = \"secret:jwt-key\"\nissuer = \"https://issuer.test\"\naudience = \"vitalsd\"\nleeway = \"5s\"\n",
        secrets.path().display()
    );
    let daemon = TestDaemon::builder().dropin(&dropin).start().await;
    let mut echo = daemon.echo().await;
    let es256 = r#"{"alg":"ES256","typ":"JWT"}"#;
    let claims = |exp: u64, nbf: u64, iss: &str, aud: &str| {
        format!(r#"{{"sub":"prober","exp":{exp},"nbf":{nbf},"iss":"{iss}","aud":"{aud}"}}"#)
    };
    let t = now();
    let good = sign_with(
        &key,
        es256,
        &claims(t + 300, t - 10, "https://issuer.test", "vitalsd"),
    );
    echo.echo(with_bearer(EchoRequest::default(), Some(&good)))
        .await
        .expect("a valid JWT is served");

    let hmac_confusion = {
        let signing = format!(
            "{}.{}",
            b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64url(claims(t + 300, t - 10, "https://issuer.test", "vitalsd").as_bytes())
        );
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public.as_bytes()),
            signing.as_bytes(),
        );
        format!("{signing}.{}", b64url(tag.as_ref()))
    };
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none"}"#),
        b64url(claims(t + 300, t - 10, "https://issuer.test", "vitalsd").as_bytes())
    );
    let bad = [
        (
            "expired",
            sign_with(
                &key,
                es256,
                &claims(t - 60, t - 600, "https://issuer.test", "vitalsd"),
            ),
        ),
        (
            "not yet valid",
            sign_with(
                &key,
                es256,
                &claims(t + 600, t + 300, "https://issuer.test", "vitalsd"),
            ),
        ),
        (
            "wrong audience",
            sign_with(
                &key,
                es256,
                &claims(t + 300, t - 10, "https://issuer.test", "other"),
            ),
        ),
        (
            "wrong issuer",
            sign_with(
                &key,
                es256,
                &claims(t + 300, t - 10, "https://evil.test", "vitalsd"),
            ),
        ),
        ("alg none", none),
        (
            "wrong key",
            sign_with(
                &other,
                es256,
                &claims(t + 300, t - 10, "https://issuer.test", "vitalsd"),
            ),
        ),
        ("ES256 to HS256", hmac_confusion),
    ];
    for (what, token) in &bad {
        let err = echo
            .echo(with_bearer(EchoRequest::default(), Some(token)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    }
    // No token, and no part of one, is ever printed.
    let signatures: Vec<&str> = bad
        .iter()
        .map(|(_, t)| t.rsplit('.').next().unwrap())
        .filter(|s| s.len() > 8)
        .collect();
    for line in daemon.logs() {
        assert!(!line.contains(good.as_str()), "{line}");
        for sig in &signatures {
            assert!(!line.contains(sig), "{line}");
        }
    }
}

/// A request id sent is returned in the headers and the reply and is on the access line;
/// a W3C traceparent's trace id is kept; calls without one get generated ids.
#[tokio::test]
async fn request_id_and_trace_context() {
    let daemon = TestDaemon::start("").await;
    let mut echo = daemon.echo().await;
    let mut request = Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "req-4711".parse().unwrap());
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let response = echo.echo(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "req-4711");
    let reply = response.into_inner();
    assert_eq!(reply.request_id, "req-4711");
    assert_eq!(reply.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(reply.span_id.len(), 16);
    assert_ne!(
        reply.span_id, "00f067aa0ba902b7",
        "the server's span is its own"
    );
    eventually(Duration::from_secs(3), || async {
        daemon
            .log_json()
            .iter()
            .any(|l| {
                l["fields"]["request_id"] == "req-4711"
                    && l["fields"]["grpc_method"] == "/vitals.echo.v1.Echo/Echo"
            })
            .then_some(())
            .ok_or_else(|| "no access line with the request id".to_string())
    })
    .await;
    let generated = echo
        .echo(EchoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(generated.request_id.len(), 32);
    assert_eq!(generated.trace_id.len(), 32);
}

/// A panic in a handler becomes INTERNAL for that call, is logged once with its location
/// and the request id, is counted, and the next call is served.
#[tokio::test]
async fn panic_in_handler_is_contained() {
    let daemon = TestDaemon::start("[echo]\nallow_panic = true\n").await;
    let mut echo = daemon.echo().await;
    let mut request = Request::new(EchoRequest {
        panic: true,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "boom-1".parse().unwrap());
    let err = echo.echo(request).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert_eq!(
        echo.echo(EchoRequest {
            echo_message: "after".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .echo_message,
        "after"
    );
    let panics = daemon.wait_for_lines("vitals::panic").await;
    assert_eq!(panics.len(), 1, "logged once: {panics:#?}");
    assert!(
        panics[0]["fields"]["location"]
            .as_str()
            .unwrap()
            .contains("src/service/echo.rs")
    );
    assert_eq!(panics[0]["span"]["request_id"], "boom-1");
    let snapshot = daemon.snapshot().await;
    let stats = crate::support::method_stats(&snapshot, "/vitals.echo.v1.Echo/Echo");
    assert_eq!(stats.panics, 1);
    // Without the config switch the knob is refused, not obeyed.
    let plain = TestDaemon::start("").await;
    let err = plain
        .echo()
        .await
        .echo(EchoRequest {
            panic: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

/// Metadata a client sends is never sent back unless echo is asked for those keys.
#[tokio::test]
async fn incoming_metadata_is_not_reflected() {
    let daemon = TestDaemon::start("").await;
    let mut request = Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert("x-secret-header", "do-not-reflect".parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", "Bearer not-for-you".parse().unwrap());
    let response = daemon.echo().await.echo(request).await.unwrap();
    for (key, value) in response.metadata().as_ref() {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains("do-not-reflect") && !value.contains("not-for-you"),
            "{key}: {value}"
        );
    }
}

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use vitals::{
    client::Dial,
    pki::{Authority, Leaf, Usage, write_file},
    proto::health::{HealthCheckRequest, health_client::HealthClient},
    tls::ClientAuth,
};

use crate::support::{TestDaemon, TestPki};

/// Connects with `config` and makes one call; the error if either step fails.
async fn try_call(daemon: &TestDaemon, config: rustls::ClientConfig) -> Result<(), String> {
    let dial = Dial::with_tls(&daemon.addr.to_string(), config);
    let channel = dial.connect().await.map_err(|e| format!("{e:#}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

async fn assert_refused(daemon: &TestDaemon, config: rustls::ClientConfig, why: &str) {
    let result = try_call(daemon, config).await;
    assert!(result.is_err(), "{why}: the call went through");
    daemon
        .wait_for_log(|l| l.contains("TLS handshake refused"))
        .await;
}

/// A client without a certificate never reaches a handler.
#[tokio::test]
async fn client_without_certificate_is_refused() {
    let daemon = TestDaemon::start("").await;
    assert_refused(
        &daemon,
        daemon.client_tls(ClientAuth::Anonymous),
        "anonymous",
    )
    .await;
}

/// A certificate from another CA is refused.
#[tokio::test]
async fn certificate_from_other_ca_is_refused() {
    let daemon = TestDaemon::start("").await;
    let other = TestPki::new();
    let config = vitals::tls::client_config(
        &daemon.pki.path("ca.crt"),
        ClientAuth::Certificate {
            cert: &other.path("client.crt"),
            key: &other.path("client.key"),
        },
    )
    .unwrap();
    assert_refused(&daemon, config, "other CA").await;
}

/// An expired client certificate is refused.
#[tokio::test]
async fn expired_certificate_is_refused() {
    let pki = Arc::new(TestPki::new());
    let now = SystemTime::now();
    let mut leaf = Leaf::new("old", &["spiffe://test.vitals/old"], Usage::Client, 1);
    leaf.not_before = now - Duration::from_secs(7 * 86_400);
    leaf.not_after = now - Duration::from_secs(86_400);
    pki.issue("expired", &leaf);
    let daemon = TestDaemon::builder().pki(pki).start().await;
    let config = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("expired.crt"),
        key: &daemon.pki.path("expired.key"),
    });
    assert_refused(&daemon, config, "expired").await;
}

/// A certificate that may only serve, not be a client, is refused.
#[tokio::test]
async fn certificate_without_client_usage_is_refused() {
    let pki = Arc::new(TestPki::new());
    pki.issue(
        "serveronly",
        &Leaf::new("s", &["serveronly.test"], Usage::Server, 1),
    );
    let daemon = TestDaemon::builder().pki(pki).start().await;
    let config = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("serveronly.crt"),
        key: &daemon.pki.path("serveronly.key"),
    });
    assert_refused(&daemon, config, "no clientAuth usage").await;
}

/// The identity falls back to the DNS SAN, then the CN, as the echo reply shows.
#[tokio::test]
async fn identity_from_dns_san_or_cn() {
    let pki = Arc::new(TestPki::new());
    pki.issue(
        "dns",
        &Leaf::new("cn-ignored", &["prober.fleet.test"], Usage::Client, 1),
    );
    pki.issue("cn", &Leaf::new("just-a-cn", &[], Usage::Client, 1));
    let grant = "[[auth.rules]]\nidentities = [\"prober.fleet.test\", \"just-a-cn\"]\nmethods = [\"vitals.echo.v1.Echo/Echo\"]\n";
    let daemon = TestDaemon::builder().pki(pki).dropin(grant).start().await;
    for (name, expected) in [("dns", "prober.fleet.test"), ("cn", "just-a-cn")] {
        let channel = daemon.dial_as(name).connect().await.unwrap();
        let reply = vitals::proto::echo::echo_client::EchoClient::new(channel)
            .echo(vitals::proto::echo::EchoRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.peer_identity, expected);
    }
}

/// A server key readable by others stops startup with exit 78 and says how to fix it.
#[tokio::test]
async fn world_readable_key_is_refused() {
    let pki = TestPki::new();
    let key = std::fs::read_to_string(pki.path("server.key")).unwrap();
    write_file(&pki.path("server.key"), &key, 0o644).unwrap();
    let dir = crate::support::write_config(&pki, "");
    let config = dir.path().join("vitalsd.toml");
    let (code, out) =
        crate::support::run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("chmod 600"), "{out}");
}

/// A server certificate that does not match its key stops startup with exit 78.
#[tokio::test]
async fn mismatched_key_is_refused() {
    let pki = TestPki::new();
    let other = Authority::new("x")
        .unwrap()
        .issue(&Leaf::new("x", &["x.test"], Usage::Server, 1))
        .unwrap();
    write_file(&pki.path("server.key"), &other.key, 0o600).unwrap();
    let dir = crate::support::write_config(&pki, "");
    let config = dir.path().join("vitalsd.toml");
    let (code, out) =
        crate::support::run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("do not go together"), "{out}");
}

/// A TLS connection with `config` (its session cache shared with every clone), then HTTP/2;
/// whether the handshake resumed a session.
async fn connect_with(
    daemon: &TestDaemon,
    config: &rustls::ClientConfig,
) -> (bool, crate::support::raw::RawConn) {
    let tcp = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config.clone()))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    (resumed, crate::support::raw::over(stream).await.unwrap())
}

/// One echo on `conn`: the grpc-status, and the identity the server saw.
async fn echo_as(conn: &mut crate::support::raw::RawConn) -> (String, String) {
    use vitals::proto::echo::{EchoRequest, EchoResponse};
    let reply = crate::support::raw::call(
        &mut conn.send,
        "/vitals.echo.v1.Echo/Echo",
        crate::support::raw::frame(&EchoRequest {
            echo_message: "who".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let status = reply.grpc_status.clone().unwrap_or_default();
    let identity = if status == "0" {
        reply.message::<EchoResponse>().peer_identity
    } else {
        String::new()
    };
    (status, identity)
}

/// A client that reconnects resumes its TLS session (a ticket, no server-side cache), and
/// the resumed connection carries the identity of the certificate its full handshake
/// verified: granted calls see it, a client without a grant is still denied. A reload
/// makes a new ticket key, so the next connection is a full handshake again.
#[tokio::test]
async fn resumed_sessions_keep_the_identity_and_the_acl() {
    let pki = Arc::new(TestPki::new());
    let (other_cert, other_key) = pki.issue(
        "other",
        &Leaf::new("other", &["spiffe://test.vitals/other"], Usage::Client, 1),
    );
    let daemon = TestDaemon::builder().pki(pki.clone()).start().await;
    let granted = daemon.client_tls(ClientAuth::Certificate {
        cert: &pki.path("client.crt"),
        key: &pki.path("client.key"),
    });
    let denied = daemon.client_tls(ClientAuth::Certificate {
        cert: &other_cert,
        key: &other_key,
    });
    for (config, status, identity) in [
        (&granted, "0", crate::support::CLIENT_ID),
        (&denied, "7", ""),
    ] {
        let (resumed, mut first) = connect_with(&daemon, config).await;
        assert!(!resumed, "the first handshake is a full one");
        assert_eq!(
            echo_as(&mut first).await,
            (status.to_string(), identity.to_string())
        );
        let (resumed, mut second) = connect_with(&daemon, config).await;
        assert!(resumed, "the second handshake resumes the first's session");
        assert_eq!(
            echo_as(&mut second).await,
            (status.to_string(), identity.to_string()),
            "the resumed connection is the same peer"
        );
    }
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reloaded the config"))
        .await;
    let (resumed, mut after) = connect_with(&daemon, &granted).await;
    assert!(!resumed, "a reload's new ticket key means a full handshake");
    assert_eq!(echo_as(&mut after).await.0, "0");
}

/// A session whose client certificate has expired since its full handshake is not resumed
/// into service: the server closes the resumed connection before serving it.
#[tokio::test]
async fn a_resumed_session_with_an_expired_certificate_is_refused() {
    let pki = Arc::new(TestPki::new());
    let mut leaf = Leaf::new("short", &["spiffe://test.vitals/short"], Usage::Client, 1);
    leaf.not_after = SystemTime::now() + Duration::from_secs(2);
    let (cert, key) = pki.issue("short", &leaf);
    let daemon = TestDaemon::builder().pki(pki.clone()).start().await;
    let config = daemon.client_tls(ClientAuth::Certificate {
        cert: &cert,
        key: &key,
    });
    let (_, first) = connect_with(&daemon, &config).await;
    crate::support::raw::assert_health_serving(first).await;
    // rcgen writes whole seconds: the certificate has expired 3 s from now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tcp = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config.clone()))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await;
    let served = match stream {
        Ok(stream) => {
            assert_eq!(
                stream.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Resumed),
                "the ticket is still good for TLS"
            );
            match crate::support::raw::over(stream).await {
                Ok(mut conn) => crate::support::raw::call(
                    &mut conn.send,
                    "/grpc.health.v1.Health/Check",
                    crate::support::raw::frame(
                        &vitals::proto::health::HealthCheckRequest::default(),
                    ),
                )
                .await
                .is_ok(),
                Err(_) => false,
            }
        }
        Err(_) => false,
    };
    assert!(
        !served,
        "a resumed session with an expired certificate was served"
    );
}

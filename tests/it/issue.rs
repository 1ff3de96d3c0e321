//! `[tls.issue]` against a real OpenBao `pki` engine: a device with no certificate is issued
//! one (its key made on the device), renews it while serving without failing a call, keeps
//! serving through a pki outage (health dropping only at health.min_cert_validity) and
//! renews once the pki is back, rotates on an authorized request, and does not re-issue on
//! a restart.
//!
//! The pki root is appended to the test PKI's `ca.crt`, which the test clients trust (and
//! which the daemon also reads as its client CA; no client here has a pki certificate).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::pki_types::pem::PemObject;
use tempfile::TempDir;
use tokio::net::TcpStream;
use vitals::{
    pki::{Leaf, Usage},
    proto::{
        admin::{RotateRequest, admin_client::AdminClient},
        echo::EchoRequest,
        health::{HealthCheckRequest, health_check_response::ServingStatus},
    },
    tls::ClientAuth,
};

use crate::support::{
    TestDaemon, TestPki,
    bao::{Bao, PKI_ROLE, audit_entries, secret_file},
    eventually,
    gate::Gate,
    prometheus::scraped,
    run_vitalsd,
    vitalsctl::{at, vitalsctl},
    write_config,
};

/// A pki engine, cert auth trusting its root, an AppRole for the first certificate, and an
/// audit log of raw bodies.
struct Pki {
    bao: Bao,
    audit: PathBuf,
    pki: Arc<TestPki>,
    /// The AppRole's role id and secret id, one file each (a `file` secrets source).
    secrets: TempDir,
    state: TempDir,
}

impl Pki {
    fn start() -> Pki {
        let (bao, audit) = Bao::start_audited();
        let root = bao.enable_pki("2m");
        bao.enable_cert_auth(&root);
        let (role_id, secret_id) = bao.enable_approle();
        let pki = TestPki::new();
        pki.issue(
            "denied",
            &Leaf::new(
                "denied",
                &["spiffe://test.vitals/no-grant"],
                Usage::Client,
                1,
            ),
        );
        let mut trusted = std::fs::read_to_string(pki.path("ca.crt")).unwrap();
        trusted.push_str(&std::fs::read_to_string(&root).unwrap());
        std::fs::write(pki.path("ca.crt"), trusted).unwrap();
        let secrets = tempfile::tempdir().unwrap();
        secret_file(secrets.path(), "pki-role-id", &role_id);
        secret_file(secrets.path(), "pki-secret-id", &secret_id);
        Pki {
            bao,
            audit,
            pki: Arc::new(pki),
            secrets,
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// The drop-in: issue from `addr` (the pki, or a gate in front of it) with cert auth and
    /// the AppRole fallback, a certificate of `ttl`, and `extra` keys of `[tls.issue]`.
    fn dropin(&self, addr: &str, ttl: &str, extra: &str) -> String {
        format!(
            "[tls.issue]\naddr = \"{addr}\"\nca_cert = \"{}\"\nrole = \"{PKI_ROLE}\"\n\
             common_name = \"gw-17\"\nalt_names = [\"localhost\"]\nuri_sans = [\"spiffe://test.vitals/gw-17\"]\n\
             ip_sans = [\"127.0.0.1\", \"::1\"]\nttl = \"{ttl}\"\nstate_dir = \"{}\"\n\
             auth = \"cert\"\nfallback = \"approle\"\nrole_id = \"secret:pki-role-id\"\nsecret_id = \"secret:pki-secret-id\"\n{extra}\n\
             [[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n",
            self.bao.ca().display(),
            self.state.path().display(),
            self.secrets.path().display(),
        )
    }

    fn file(&self) -> PathBuf {
        self.state.path().join("issued.pem")
    }

    async fn start_daemon(&self, dropin: String) -> TestDaemon {
        TestDaemon::builder()
            .pki(self.pki.clone())
            .dropin(dropin)
            .start()
            .await
    }

    /// The audit log's entries for requests to `path`.
    fn requests(&self, path: &str) -> Vec<serde_json::Value> {
        audit_entries(&self.audit)
            .into_iter()
            .filter(|e| e["type"] == "request" && e["request"]["path"] == path)
            .collect()
    }
}

/// The names [`Pki::dropin`] asks for, besides the CN `gw-17`.
const GW17_NAMES: [&str; 4] = [
    "localhost",
    "spiffe://test.vitals/gw-17",
    "127.0.0.1",
    "::1",
];

/// The serial of the first certificate in `file`.
fn serial_in(file: &Path) -> String {
    let certs = vitals::tls::load_certs(file).unwrap();
    vitals::x509::serial(&certs[0]).unwrap()
}

/// The serial of the certificate a new TLS connection to `addr` is served.
async fn served_serial(daemon: &TestDaemon, addr: SocketAddr) -> String {
    let tls = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("client.crt"),
        key: &daemon.pki.path("client.key"),
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = connector.connect(name, tcp).await.expect("a TLS handshake");
    let chain = stream.get_ref().1.peer_certificates().unwrap();
    vitals::x509::serial(&chain[0]).unwrap()
}

async fn overall(daemon: &TestDaemon) -> ServingStatus {
    let answer = daemon
        .health()
        .await
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    answer.status()
}

/// A device with no certificate is issued one before it serves: its key stays on the
/// device. Checked three ways: the certificate's public key is the state file's key; the
/// audit log (raw bodies) shows a CSR sent to pki/sign and a signed answer with no private
/// key in it; and nothing asked pki/issue (where the engine would make the key).
#[tokio::test]
async fn a_device_without_a_certificate_is_issued_one_and_keeps_its_key() {
    let pki = Pki::start();
    let addr = pki.bao.addr();
    let daemon = pki.start_daemon(pki.dropin(&addr, "90s", "")).await;
    daemon.echo_ok().await;

    let file = pki.file();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(served_serial(&daemon, daemon.addr).await, serial_in(&file));

    let pem = std::fs::read_to_string(&file).unwrap();
    let key = rcgen::KeyPair::from_pem(&pem).unwrap();
    let certs = vitals::tls::load_certs(&file).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    // The EC point the certificate carries is the one of the key made on the device.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert_eq!(cert.subject().to_string(), "CN=gw-17");

    let signs = pki.requests(&format!("pki/sign/{PKI_ROLE}"));
    assert_eq!(signs.len(), 1, "one sign request");
    let csr = signs[0]["request"]["data"]["csr"].as_str().unwrap();
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{csr}"
    );
    assert!(!csr.contains("PRIVATE KEY"));
    let answers: Vec<_> = audit_entries(&pki.audit)
        .into_iter()
        .filter(|e| {
            e["type"] == "response" && e["request"]["path"] == format!("pki/sign/{PKI_ROLE}")
        })
        .collect();
    assert_eq!(answers.len(), 1);
    let data = &answers[0]["response"]["data"];
    assert!(
        data["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(data.get("private_key").is_none(), "{data}");
    let issues = audit_entries(&pki.audit)
        .into_iter()
        .filter(|e| {
            e["request"]["path"]
                .as_str()
                .unwrap_or("")
                .starts_with("pki/issue")
        })
        .count();
    assert_eq!(issues, 0);
    // No certificate yet, so cert auth could not log in: the AppRole did, and the log said so.
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("logging in with the fallback AppRole") && l.contains("WARN")),
        "{:?}",
        daemon.logs()
    );
    assert!(!pem.is_empty() && !daemon.logs().iter().any(|l| l.contains("PRIVATE KEY")));
}

/// A renewal swaps the certificate in while a Watch stream and a loop of unary calls run
/// on a connection opened before it: none of them fails, and a new TLS connection is
/// served the new serial. The renewal logged in with the certificate it replaced (cert
/// auth), and the metrics say it succeeded.
#[tokio::test]
async fn a_renewal_fails_no_call_and_new_connections_get_the_new_certificate() {
    let pki = Pki::start();
    let addr = pki.bao.addr();
    // 60 s certificates renewed with 50 s left: about 10 s after the first is issued.
    let dropin = pki.dropin(&addr, "60s", "renew_before = \"50s\"\njitter = \"0s\"");
    let daemon = pki.start_daemon(dropin).await;
    let first = serial_in(&pki.file());

    let channel = daemon.channel().await;
    let mut health = vitals::proto::health::health_client::HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = {
        let stop = stop.clone();
        let mut echo = vitals::proto::echo::echo_client::EchoClient::new(channel.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match echo
                    .echo(EchoRequest {
                        echo_message: "x".into(),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(status) => failed.push(status.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    eventually(Duration::from_secs(40), || async {
        let renewed = daemon
            .logs()
            .iter()
            .any(|l| l.contains("serving the new TLS identity") && l.contains("renewed"));
        renewed
            .then_some(())
            .ok_or_else(|| "not renewed yet".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = calls.await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 20, "{ok} calls");
    // The Watch stream is still open: nothing arrives (no change), and it has not ended.
    let next = tokio::time::timeout(Duration::from_millis(300), watch.message()).await;
    match next {
        Err(_) => {}
        Ok(Ok(Some(m))) => assert_eq!(m.status(), ServingStatus::Serving),
        Ok(other) => panic!("the Watch stream ended: {other:?}"),
    }

    let second = serial_in(&pki.file());
    assert_ne!(first, second);
    assert_eq!(served_serial(&daemon, daemon.addr).await, second);
    let logins = pki.requests("auth/cert/login").len();
    assert!(logins >= 1, "the renewal logged in with its certificate");
    assert_eq!(
        scraped(&daemon, "vitals_tls_renewal_last_attempt_successful").await,
        Some(1.0)
    );
    assert!(
        scraped(&daemon, "vitals_tls_renewal_last_success_timestamp_seconds").await > Some(0.0)
    );
    assert_eq!(
        scraped(&daemon, "vitals_tls_renewal_failures_total").await,
        Some(0.0)
    );
}

/// With the pki cut off (a gate in front of it closed), renewal fails and the daemon keeps
/// serving its current certificate; overall health stays SERVING until less than
/// health.min_cert_validity is left, then turns NOT_SERVING; once the pki is reachable
/// again the next retry renews, and health is SERVING again.
#[tokio::test]
async fn a_pki_outage_keeps_the_current_certificate_until_the_pki_is_back() {
    let pki = Pki::start();
    let gate = Gate::new(format!("127.0.0.1:{}", pki.bao.port).parse().unwrap());
    let addr = format!("https://{}", gate.addr);
    // 60 s certificates, renewal due with 40 s left, readiness lost with 25 s left.
    let dropin = pki.dropin(&addr, "60s", "renew_before = \"40s\"\njitter = \"0s\"")
        + "[health]\nmin_cert_validity = \"25s\"\n";
    let daemon = pki.start_daemon(dropin).await;
    let first = serial_in(&pki.file());
    gate.close();

    eventually(Duration::from_secs(40), || async {
        let failed = daemon
            .logs()
            .iter()
            .any(|l| l.contains("certificate renewal failed"));
        failed
            .then_some(())
            .ok_or_else(|| "no failed renewal yet".to_string())
    })
    .await;
    assert_eq!(
        overall(&daemon).await,
        ServingStatus::Serving,
        "above the threshold"
    );
    daemon.echo_ok().await;
    assert_eq!(served_serial(&daemon, daemon.addr).await, first);

    eventually(Duration::from_secs(30), || async {
        match overall(&daemon).await {
            ServingStatus::NotServing => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Still the same certificate, still served.
    daemon.echo_ok().await;
    assert_eq!(served_serial(&daemon, daemon.addr).await, first);
    assert!(
        daemon.logs().iter().any(|l| l.contains("of validity left")
            && l.contains("below health.min_cert_validity (25s)")),
        "the reason says how much is left"
    );
    assert!(scraped(&daemon, "vitals_tls_renewal_failures_total").await >= Some(1.0));
    assert_eq!(
        scraped(&daemon, "vitals_tls_renewal_last_attempt_successful").await,
        Some(0.0)
    );

    gate.open();
    eventually(Duration::from_secs(20), || async {
        match overall(&daemon).await {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let renewed = serial_in(&pki.file());
    assert_ne!(renewed, first);
    assert_eq!(served_serial(&daemon, daemon.addr).await, renewed);
    // The failures, retried every second or so near the end, were said when they started
    // (and, at most, once more had their kind changed), then renewal working again once.
    let failed_lines = count(&daemon, "certificate renewal failed");
    let failures = scraped(&daemon, "vitals_tls_renewal_failures_total")
        .await
        .unwrap();
    eprintln!("issue: pki outage: {failures} failed attempts, {failed_lines} log lines");
    assert!(
        failed_lines <= 2,
        "{failed_lines} lines for {failures} failures"
    );
    assert_eq!(count(&daemon, "certificate renewal works again"), 1);
    assert_eq!(
        scraped(&daemon, "vitals_tls_renewal_last_attempt_successful").await,
        Some(1.0)
    );
}

/// Rotate is refused to a client no rule grants it (no default grant covers it), renews
/// for one that has a grant (`vitalsctl rotate`), and answers FAILED_PRECONDITION on a
/// daemon without `[tls.issue]`.
#[tokio::test]
async fn rotate_needs_a_grant_and_renews_at_once() {
    let pki = Pki::start();
    let addr = pki.bao.addr();
    let daemon = pki.start_daemon(pki.dropin(&addr, "90s", "")).await;
    let first = serial_in(&pki.file());

    let denied = daemon.dial_as("denied").connect().await.unwrap();
    let err = AdminClient::new(denied)
        .rotate(RotateRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert_eq!(serial_in(&pki.file()), first);

    let run = vitalsctl(&at(&daemon, &["rotate", "--json"])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let answer = run.json();
    let serial = answer["serial"].as_str().unwrap().to_string();
    assert_ne!(serial, first);
    assert_eq!(serial_in(&pki.file()), serial);
    assert!(answer["not_after_unix"].as_i64().unwrap() > 0);
    eventually(Duration::from_secs(5), || async {
        let served = served_serial(&daemon, daemon.addr).await;
        (served == serial).then_some(()).ok_or(served)
    })
    .await;
    // Built once: the file watcher (debounce 500 ms) does not build it again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&daemon, "serving the new TLS identity"), 1);

    let plain = TestDaemon::start("").await;
    let run = vitalsctl(&at(&plain, &["rotate"])).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("FAILED_PRECONDITION") && run.stderr.contains("[tls.issue]"),
        "{run:?}"
    );
}

/// A restart reads the state directory: a certificate that is not due is served as it is,
/// and the pki is not asked again.
#[tokio::test]
async fn a_restart_does_not_reissue() {
    let pki = Pki::start();
    let addr = pki.bao.addr();
    let dropin = pki.dropin(&addr, "90s", "");
    let mut daemon = pki.start_daemon(dropin.clone()).await;
    let first = serial_in(&pki.file());
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(15)).await.success());

    let again = pki.start_daemon(dropin).await;
    assert_eq!(served_serial(&again, again.addr).await, first);
    assert_eq!(pki.requests(&format!("pki/sign/{PKI_ROLE}")).len(), 1);
    assert!(
        again
            .logs()
            .iter()
            .any(|l| l.contains("not due for renewal"))
    );
    // A third of the 90 s it was issued for, plus up to its tenth of jitter: not a third of
    // the 120 s from OpenBao's back-dated notBefore (40 s).
    let line = logged(&again, "not due for renewal").unwrap();
    let (renew_at, not_after) = (
        line["fields"]["renew_at"].as_u64().unwrap(),
        line["fields"]["not_after"].as_u64().unwrap(),
    );
    assert!((29..=33).contains(&(not_after - renew_at)), "{line}");
}

/// With no certificate and no pki to be had, startup gives up at secrets.startup_timeout
/// and exits 69 (EX_UNAVAILABLE), saying why.
#[tokio::test]
async fn no_certificate_and_no_pki_exits_unavailable() {
    let pki = Pki::start();
    let refused = crate::support::vitalsctl::refused_addr();
    let dropin = pki.dropin(&format!("https://{refused}"), "90s", "")
        + "[secrets]\nstartup_timeout = \"2s\"\n";
    let dir = write_config(&pki.pki, &dropin);
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(69), "{out}");
    assert!(out.contains("no usable server certificate"), "{out}");
    assert!(out.contains("unreachable"), "{out}");
    assert!(!pki.file().exists());
}

/// A certificate that expired while the device was off cannot log in with cert auth: the
/// AppRole fallback does, the log warns why, and a new certificate is issued before the
/// daemon serves. (The expired one is of a CA the device trusts, with the names it asks
/// for: one that does not verify would be set aside instead, see
/// `a_state_file_that_does_not_verify_is_set_aside_and_replaced`.)
#[tokio::test]
async fn an_expired_certificate_falls_back_to_the_approle() {
    let pki = Pki::start();
    let mut expired = Leaf::new("gw-17", &GW17_NAMES, Usage::Server, 1);
    expired.not_before = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
    expired.not_after = expired.not_before + Duration::from_secs(86_400);
    let old = pki.pki.ca.issue(&expired).unwrap();
    vitals::pki::write_file(&pki.file(), &format!("{}{}", old.key, old.cert), 0o600).unwrap();
    let old = rustls::pki_types::CertificateDer::from_pem_slice(old.cert.as_bytes()).unwrap();
    let addr = pki.bao.addr();
    let daemon = pki.start_daemon(pki.dropin(&addr, "90s", "")).await;
    daemon.echo_ok().await;
    let warned = daemon.log_json().into_iter().find(|l| {
        l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("fallback AppRole"))
    });
    let warned = warned.expect("a warning about the fallback");
    let reason = warned["fields"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("expired while the device was off"),
        "{reason}"
    );
    assert_eq!(pki.requests("auth/approle/login").len(), 1);
    assert_eq!(pki.requests("auth/cert/login").len(), 0);
    assert_ne!(serial_in(&pki.file()), vitals::x509::serial(&old).unwrap());
}

/// The renewal task logs in with the secrets the last reload pulled: after the AppRole's
/// secret id is replaced (the old one destroyed) and the daemon reloaded, a rotate logs in
/// with the new one.
#[tokio::test]
async fn a_reload_gives_renewal_the_new_login_secrets() {
    let pki = Pki::start();
    let addr = pki.bao.addr();
    let dropin = pki.dropin(&addr, "90s", "").replace(
        "auth = \"cert\"\nfallback = \"approle\"\n",
        "auth = \"approle\"\n",
    );
    let daemon = pki.start_daemon(dropin).await;
    let first = serial_in(&pki.file());
    let role = format!("auth/approle/role/{PKI_ROLE}");
    let old = std::fs::read_to_string(pki.secrets.path().join("pki-secret-id")).unwrap();
    let new = pki.bao.run(&[
        "write",
        "-f",
        "-field=secret_id",
        &format!("{role}/secret-id"),
    ]);
    pki.bao.run(&[
        "write",
        &format!("{role}/secret-id/destroy"),
        &format!("secret_id={old}"),
    ]);
    secret_file(pki.secrets.path(), "pki-secret-id", &new);
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reloaded the config, secrets and certificates"))
        .await;
    let run = vitalsctl(&at(&daemon, &["rotate", "--json"])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_ne!(serial_in(&pki.file()), first);
}

/// The certificate chain a new TLS connection to `daemon` is served.
async fn served_chain(daemon: &TestDaemon) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let tls = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("client.crt"),
        key: &daemon.pki.path("client.key"),
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(daemon.addr.ip().into());
    let stream = connector.connect(name, tcp).await.expect("a TLS handshake");
    stream.get_ref().1.peer_certificates().unwrap().to_vec()
}

fn count(daemon: &TestDaemon, needle: &str) -> usize {
    daemon.logs().iter().filter(|l| l.contains(needle)).count()
}

/// The JSON log line whose message has `needle`.
fn logged(daemon: &TestDaemon, needle: &str) -> Option<serde_json::Value> {
    daemon.log_json().into_iter().find(|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle))
    })
}

/// A role that issues serverAuth-only certificates (server_flag=true client_flag=false, a
/// common hardening): OpenBao's cert auth refuses them ("x509: certificate specifies an
/// incompatible key usage", as an HTTP 500). The refusal is reported as one, with the
/// engine's words, and the AppRole fallback logs in at once: a rotate renews, with one cert
/// login and no retry. Without a fallback, rotate fails at once with the reason and what
/// cert auth needs, and nothing calls the engine unreachable.
#[tokio::test]
async fn cert_auth_refusing_a_server_only_certificate_falls_back_at_once() {
    let pki = Pki::start();
    pki.bao.pki_role(
        "2m",
        &[
            "key_type=ec",
            "key_bits=256",
            "server_flag=true",
            "client_flag=false",
        ],
    );
    let addr = pki.bao.addr();
    let dropin = pki.dropin(&addr, "90s", "");
    let mut daemon = pki.start_daemon(dropin.clone()).await;
    let first = serial_in(&pki.file());
    let certs = vitals::tls::load_certs(&pki.file()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    let usage = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.server_auth && !usage.client_auth, "{usage:?}");

    let run = vitalsctl(&at(&daemon, &["rotate", "--json"])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_ne!(serial_in(&pki.file()), first);
    let warned = logged(
        &daemon,
        "cert auth refused the certificate: logging in with the fallback AppRole",
    )
    .expect("the fallback is said");
    assert_eq!(warned["level"], "WARN");
    let reason = warned["fields"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("cert auth refused the certificate (HTTP 500 for /v1/auth/cert/login)")
            && reason.contains("incompatible key usage"),
        "{reason}"
    );
    assert_eq!(
        pki.requests("auth/cert/login").len(),
        1,
        "no retry of a refusal"
    );
    assert_eq!(pki.requests("auth/approle/login").len(), 2);
    assert_eq!(count(&daemon, "unreachable"), 0);
    eprintln!(
        "issue: rotate with cert auth refused and the AppRole fallback: {} ms",
        run.took.as_millis()
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(15)).await.success());

    // The same device without a fallback: its certificate is not due, so it starts.
    let alone = dropin.replace(
        "fallback = \"approle\"\nrole_id = \"secret:pki-role-id\"\nsecret_id = \"secret:pki-secret-id\"\n",
        "",
    );
    assert_ne!(alone, dropin);
    let daemon = pki.start_daemon(alone).await;
    let held = serial_in(&pki.file());
    let run = vitalsctl(&at(&daemon, &["rotate"])).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("incompatible key usage")
            && run.stderr.contains("client_flag")
            && !run.stderr.contains("unreachable"),
        "{}",
        run.stderr
    );
    assert!(run.took < Duration::from_secs(5), "{:?}", run.took);
    assert_eq!(serial_in(&pki.file()), held);
    assert_eq!(pki.requests("auth/cert/login").len(), 2);
    eprintln!(
        "issue: rotate with cert auth refused and no fallback: exit 3 in {} ms: {}",
        run.took.as_millis(),
        run.stderr.trim()
    );
}

/// A state file whose key is not its certificate's (what a pki answering with another key
/// left behind before issue 23) does not stop the start: it is set aside (renamed, kept),
/// the pki is asked again, and the new certificate is served.
#[tokio::test]
async fn a_state_file_that_does_not_verify_is_set_aside_and_replaced() {
    let pki = Pki::start();
    let addr = pki.bao.addr();
    let dropin = pki.dropin(&addr, "90s", "");
    let mut daemon = pki.start_daemon(dropin.clone()).await;
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(15)).await.success());
    let pem = std::fs::read_to_string(pki.file()).unwrap();
    let chain = &pem[pem.find("-----BEGIN CERTIFICATE-----").unwrap()..];
    let other = rcgen::KeyPair::generate().unwrap();
    let bad = format!("{}{chain}", other.serialize_pem());
    vitals::pki::write_file(&pki.file(), &bad, 0o600).unwrap();
    let bad_serial = serial_in(&pki.file());

    let daemon = pki.start_daemon(dropin).await;
    daemon.echo_ok().await;
    let aside = logged(&daemon, "does not verify: set aside").expect("the set-aside is said");
    let reason = aside["fields"]["reason"].as_str().unwrap();
    assert!(reason.contains("public key is not the one"), "{reason}");
    let kept = PathBuf::from(aside["fields"]["set_aside_as"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), bad);
    let served = served_serial(&daemon, daemon.addr).await;
    assert_ne!(served, bad_serial);
    assert_eq!(served, serial_in(&pki.file()));
    assert_eq!(pki.requests(&format!("pki/sign/{PKI_ROLE}")).len(), 2);
}

/// The served chain is the leaf alone: the pki's self-signed root, which the engine returns
/// in its chain, is neither kept nor sent in handshakes.
#[tokio::test]
async fn the_self_signed_root_does_not_travel_in_handshakes() {
    let pki = Pki::start();
    let addr = pki.bao.addr();
    let daemon = pki.start_daemon(pki.dropin(&addr, "90s", "")).await;
    let chain = served_chain(&daemon).await;
    assert_eq!(chain.len(), 1, "the leaf only");
    assert!(!vitals::x509::self_issued(&chain[0]));
    assert_eq!(vitals::tls::load_certs(&pki.file()).unwrap().len(), 1);
}

/// Names, key type and issuer follow the config: a restart with other URI SANs is issued a
/// new certificate at start; a reload asking for P-384 gets one at once (and the identity
/// is rebuilt once for it, not again by the file watcher); a restart asking for Ed25519
/// gets one. Each is served and a call works.
#[tokio::test]
async fn changed_names_and_key_types_are_reissued_at_start_and_at_reload() {
    let pki = Pki::start();
    pki.bao.pki_role("2m", &["key_type=any"]);
    let addr = pki.bao.addr();
    let dropin = pki.dropin(&addr, "90s", "");
    let mut daemon = pki.start_daemon(dropin.clone()).await;
    let first = serial_in(&pki.file());
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(15)).await.success());

    let renamed = dropin.replace("spiffe://test.vitals/gw-17", "spiffe://test.vitals/gw-18");
    let daemon = pki.start_daemon(renamed.clone()).await;
    let chain = served_chain(&daemon).await;
    assert_eq!(
        vitals::x509::identity(&chain[0]).as_deref(),
        Some("spiffe://test.vitals/gw-18")
    );
    assert_ne!(vitals::x509::serial(&chain[0]).unwrap(), first);
    let said = logged(&daemon, "is not what [tls.issue] asks for now").expect("the reason is said");
    let reason = said["fields"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("lacks URI:spiffe://test.vitals/gw-18")
            && reason.contains("not asked for: URI:spiffe://test.vitals/gw-17"),
        "{reason}"
    );

    daemon.rewrite_dropin(&renamed.replace("ttl = \"90s\"", "ttl = \"90s\"\nkey_type = \"p384\""));
    daemon.signal("HUP");
    eventually(Duration::from_secs(20), || async {
        let leaf = &served_chain(&daemon).await[0];
        let kind = vitals::x509::public_key(leaf).and_then(|k| vitals::x509::key_type(&k));
        (kind == Some(vitals::x509::KeyType::P384))
            .then_some(())
            .ok_or(format!("{kind:?}"))
    })
    .await;
    daemon.echo_ok().await;
    assert!(
        logged(&daemon, "the pki issued a new certificate")
            .is_some_and(|l| l["fields"]["why"] == "config changed")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count(&daemon, "serving the new TLS identity"),
        1,
        "one identity build for the new certificate"
    );
    drop(daemon);

    let ed25519 = renamed.replace("ttl = \"90s\"", "ttl = \"90s\"\nkey_type = \"ed25519\"");
    let daemon = pki.start_daemon(ed25519).await;
    let leaf = &served_chain(&daemon).await[0];
    let kind = vitals::x509::public_key(leaf).and_then(|k| vitals::x509::key_type(&k));
    assert_eq!(kind, Some(vitals::x509::KeyType::Ed25519));
    daemon.echo_ok().await;
    assert_eq!(pki.requests(&format!("pki/sign/{PKI_ROLE}")).len(), 4);
}

/// A `tls.issue.issuer_ca` that cannot be read is a config error: exit 78 at start naming
/// it, with the held certificate left in place (not set aside: it is the config that is
/// wrong); at a reload, the reload is rejected and the daemon serves on.
#[tokio::test]
async fn an_unreadable_issuer_ca_is_a_config_error() {
    let pki = Pki::start();
    let addr = pki.bao.addr();
    let dropin = pki.dropin(&addr, "90s", "");
    let mut daemon = pki.start_daemon(dropin.clone()).await;
    let held = std::fs::read(pki.file()).unwrap();
    let missing = "issuer_ca = \"/nonexistent/pki-root.pem\"";
    daemon.rewrite_dropin(&pki.dropin(&addr, "90s", missing));
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reload rejected") && l.contains("/nonexistent/pki-root.pem"))
        .await;
    daemon.echo_ok().await;
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(15)).await.success());

    let dir = write_config(&pki.pki, &pki.dropin(&addr, "90s", missing));
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("tls.issue.issuer_ca") && out.contains("/nonexistent/pki-root.pem"),
        "{out}"
    );
    assert_eq!(std::fs::read(pki.file()).unwrap(), held);
    assert_eq!(pki.requests(&format!("pki/sign/{PKI_ROLE}")).len(), 1);
}

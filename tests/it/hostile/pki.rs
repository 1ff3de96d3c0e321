//! A pki that answers `pki/sign` with certificates that must not be served (issue 23,
//! finding 2): for another key, with other names, already expired, of a CA the device does
//! not trust, or due for renewal at once ([`HostilePki`]). None is written or served:
//! `vitalsctl rotate` fails with the reason, the current certificate keeps serving, the
//! retries back off instead of looping, the failures are said once, and a start that only
//! gets bad answers gives up at `secrets.startup_timeout` after a few requests.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tempfile::TempDir;
use vitals::proto::health::{HealthCheckRequest, health_check_response::ServingStatus};

use super::harness::{assert_recovered, baseline};
use crate::support::{
    TestDaemon, TestPki,
    bao::secret_file,
    eventually,
    hostile_pki::{Answer, HostilePki},
    run_vitalsd,
    vitalsctl::{at, vitalsctl},
    write_config,
};

/// A device issued by the hostile pki: the test PKI (whose CA the test clients trust, and
/// the pki's signing CA added to it), the login secrets, the state directory.
struct Device {
    hostile: HostilePki,
    pki: Arc<TestPki>,
    secrets: TempDir,
    state: TempDir,
}

impl Device {
    async fn new() -> Device {
        let hostile = HostilePki::start().await;
        let pki = TestPki::new();
        let mut trusted = std::fs::read_to_string(pki.path("ca.crt")).unwrap();
        trusted.push_str(&std::fs::read_to_string(hostile.issuer_ca()).unwrap());
        std::fs::write(pki.path("ca.crt"), trusted).unwrap();
        let secrets = tempfile::tempdir().unwrap();
        secret_file(secrets.path(), "pki-role-id", "role");
        secret_file(secrets.path(), "pki-secret-id", "secret");
        Device {
            hostile,
            pki: Arc::new(pki),
            secrets,
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// `[tls.issue]` from the hostile pki, trusting its signing CA, AppRole login.
    fn dropin(&self, ttl: &str, extra: &str) -> String {
        format!(
            "[tls.issue]\naddr = \"{}\"\nca_cert = \"{}\"\nissuer_ca = \"{}\"\nrole = \"device\"\n\
             common_name = \"gw-17\"\nalt_names = [\"localhost\"]\nuri_sans = [\"spiffe://test.vitals/gw-17\"]\n\
             ip_sans = [\"127.0.0.1\"]\nttl = \"{ttl}\"\nstate_dir = \"{}\"\nauth = \"approle\"\n\
             role_id = \"secret:pki-role-id\"\nsecret_id = \"secret:pki-secret-id\"\n{extra}\n\
             [[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n",
            self.hostile.url(),
            self.hostile.tls_ca().display(),
            self.hostile.issuer_ca().display(),
            self.state.path().display(),
            self.secrets.path().display(),
        )
    }

    fn file(&self) -> PathBuf {
        self.state.path().join("issued.pem")
    }

    async fn start(&self, dropin: String) -> TestDaemon {
        TestDaemon::builder()
            .pki(self.pki.clone())
            .dropin(dropin)
            .start()
            .await
    }
}

/// The serial of the certificate a new TLS connection is served.
async fn served_serial(daemon: &TestDaemon) -> String {
    let tls = daemon.client_tls(vitals::tls::ClientAuth::Certificate {
        cert: &daemon.pki.path("client.crt"),
        key: &daemon.pki.path("client.key"),
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(daemon.addr.ip().into());
    let stream = connector.connect(name, tcp).await.expect("a TLS handshake");
    let chain = stream.get_ref().1.peer_certificates().unwrap();
    vitals::x509::serial(&chain[0]).unwrap()
}

fn lines(daemon: &TestDaemon, needle: &str) -> usize {
    daemon.logs().iter().filter(|l| l.contains(needle)).count()
}

async fn readiness(daemon: &TestDaemon) -> ServingStatus {
    daemon
        .health()
        .await
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status()
}

fn bytes(file: &Path) -> Vec<u8> {
    std::fs::read(file).unwrap()
}

/// Rotate against each bad answer: exit 3 (UNAVAILABLE) with what is wrong, the state file
/// byte for byte the same, the same certificate served, readiness SERVING, a new client
/// served and the footprint back at the baseline; one log line for the run of failures,
/// and one when a good answer ends it.
#[tokio::test]
async fn bad_certificates_are_refused_and_nothing_is_written() {
    let device = Device::new().await;
    let daemon = device.start(device.dropin("90s", "")).await;
    let first = served_serial(&daemon).await;
    let held = bytes(&device.file());
    let base = baseline(&daemon).await;

    let cases = [
        (
            Answer::OtherKey,
            "its public key is not the one of the key made for it",
        ),
        (
            Answer::OtherNames,
            "it carries names not asked for: DNS:evil.example",
        ),
        (Answer::Expired, "it expired at"),
        (Answer::Untrusted, "it does not chain to a CA in"),
        (Answer::ShortLived, "it is valid for only"),
    ];
    for (answer, said) in cases {
        device.hostile.answer(answer);
        let run = vitalsctl(&at(&daemon, &["rotate"])).await;
        assert_eq!(run.code, Some(3), "{answer:?}: {run:?}");
        assert!(
            run.stderr.contains("UNAVAILABLE")
                && run.stderr.contains("refused the certificate it issued")
                && run.stderr.contains(said),
            "{answer:?}: {}",
            run.stderr
        );
        assert_eq!(
            bytes(&device.file()),
            held,
            "{answer:?}: the state file changed"
        );
        assert_eq!(served_serial(&daemon).await, first, "{answer:?}");
        eprintln!(
            "hostile: pki {answer:?}: rotate refused: {}",
            run.stderr.trim()
        );
    }
    assert_eq!(readiness(&daemon).await, ServingStatus::Serving);
    assert_recovered(&daemon, "hostile pki answers", base).await;
    assert_eq!(
        lines(&daemon, "certificate renewal failed"),
        1,
        "five failures of one kind in a row are said once"
    );
    assert_eq!(
        lines(&daemon, "the pki issued a new certificate"),
        0,
        "nothing was taken"
    );

    device.hostile.answer(Answer::Good);
    let run = vitalsctl(&at(&daemon, &["rotate", "--json"])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_ne!(bytes(&device.file()), held);
    assert_eq!(lines(&daemon, "certificate renewal works again"), 1);
    eventually(Duration::from_secs(5), || async {
        let served = served_serial(&daemon).await;
        (served != first).then_some(()).ok_or(served)
    })
    .await;
}

/// A renewal that keeps getting an expired certificate retries 1 s doubling: at most 3
/// more sign requests in the 10 s after the first failure (the loop this replaces sent
/// 101-106 in 5 s), one log line, the current certificate served and readiness SERVING.
#[tokio::test]
async fn a_bad_answer_is_retried_with_backoff_not_in_a_loop() {
    let device = Device::new().await;
    // 40 s certificates renewed with 35 s left: the first renewal 5 s after the start.
    let daemon = device
        .start(device.dropin("40s", "renew_before = \"35s\"\njitter = \"0s\""))
        .await;
    let first = served_serial(&daemon).await;
    device.hostile.answer(Answer::Expired);
    let signs = device.hostile.signs();
    eventually(Duration::from_secs(15), || async {
        let now = device.hostile.signs();
        (now > signs)
            .then_some(())
            .ok_or(format!("{now} sign requests"))
    })
    .await;
    let failed_at = Instant::now();
    let at_first = device.hostile.signs();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(failed_at.elapsed())).await;
    let more = device.hostile.signs() - at_first;
    eprintln!(
        "hostile: pki Expired during renewal: {more} sign requests in the 10 s after the first failure"
    );
    assert!(more <= 3, "{more} sign requests in 10 s");
    assert_eq!(lines(&daemon, "certificate renewal failed"), 1);
    assert_eq!(served_serial(&daemon).await, first);
    assert_eq!(readiness(&daemon).await, ServingStatus::Serving);
    daemon.echo_ok().await;
}

/// With no certificate and a pki that only answers with the wrong names, startup asks
/// again with backoff until `secrets.startup_timeout` (6 s), then exits 69 saying why;
/// nothing is written, and at most 4 sign requests were made.
#[tokio::test]
async fn a_start_with_only_bad_answers_gives_up_after_a_few_requests() {
    let device = Device::new().await;
    device.hostile.answer(Answer::OtherNames);
    let dropin = device.dropin("90s", "") + "[secrets]\nstartup_timeout = \"6s\"\n";
    let dir = write_config(&device.pki, &dropin);
    let config = dir.path().join("vitalsd.toml");
    let started = Instant::now();
    let (code, out) = tokio::task::spawn_blocking(move || {
        let out = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
        drop(dir);
        out
    })
    .await
    .unwrap();
    let signs = device.hostile.signs();
    eprintln!(
        "hostile: pki OtherNames at start: exit {code:?} after {} ms, {signs} sign requests",
        started.elapsed().as_millis()
    );
    assert_eq!(code, Some(69), "{out}");
    assert!(
        out.contains("no usable server certificate")
            && out.contains("refused the certificate it issued")
            && out.contains("DNS:evil.example"),
        "{out}"
    );
    assert!((2..=4).contains(&signs), "{signs} sign requests");
    assert!(!device.file().exists());
}

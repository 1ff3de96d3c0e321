//! TLS files changed on disk by another process are served without SIGHUP (issue 17): a
//! certificate and key renamed over the old ones or rewritten in place, a mismatched pair
//! refused with the old one kept, a new client CA; by inotify and by polling.

use std::{path::Path, sync::Arc, time::Duration};

use vitals::{
    client::Dial,
    pki::{Authority, Leaf, Usage, write_file},
    tls::ClientAuth,
};

use crate::support::{TestDaemon, TestPki, eventually};

/// Generous: the suite runs many daemons on two cores.
const WAIT: Duration = Duration::from_secs(15);

/// The leaf certificate the daemon serves on a new connection, DER.
pub async fn served(daemon: &TestDaemon) -> Result<Vec<u8>, String> {
    let tls = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("client.crt"),
        key: &daemon.pki.path("client.key"),
    });
    let tcp = tokio::net::TcpStream::connect(daemon.addr)
        .await
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let certs = stream.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs.first().map(|c| c.to_vec()).unwrap_or_default())
}

/// The first certificate in a PEM file, DER.
pub fn leaf_der(path: &Path) -> Vec<u8> {
    vitals::tls::load_certs(path).unwrap()[0].to_vec()
}

fn serial(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string()
}

/// Waits until new connections are served `expected` (a certificate's DER).
pub async fn until_served(daemon: &TestDaemon, expected: &[u8]) {
    let want = serial(expected);
    eventually(WAIT, || async {
        let got = served(daemon).await?;
        if got == expected {
            Ok(())
        } else {
            Err(format!(
                "serving serial {}, not {want}",
                if got.is_empty() {
                    "none".into()
                } else {
                    serial(&got)
                }
            ))
        }
    })
    .await;
}

/// A server leaf for localhost with a fresh key.
pub fn server_leaf(name: &str) -> Leaf {
    Leaf::new(name, &["localhost", "127.0.0.1"], Usage::Server, 30)
}

/// Starts a daemon and waits until it follows its files (a change made before that would
/// be part of what it first saw).
async fn following(pki: Arc<TestPki>, dropin: &str, how: &str) -> TestDaemon {
    let daemon = TestDaemon::builder().pki(pki).dropin(dropin).start().await;
    daemon
        .wait_for_log(|l| l.contains(&format!("following the TLS files on disk by {how}")))
        .await;
    daemon
}

/// A certificate and key written to temporary files and renamed over the served ones (as
/// certbot and most tools do) are served on the next handshake, and so are a pair rewritten
/// in place; no SIGHUP is sent.
#[tokio::test]
async fn replaced_certificate_is_served_without_sighup() {
    let pki = Arc::new(TestPki::new());
    let daemon = following(pki.clone(), "", "inotify").await;
    assert_eq!(
        served(&daemon).await.unwrap(),
        leaf_der(&pki.path("server.crt"))
    );

    let (cert, key) = pki.issue("next", &server_leaf("renamed"));
    std::fs::rename(&cert, pki.path("server.crt")).unwrap();
    std::fs::rename(&key, pki.path("server.key")).unwrap();
    until_served(&daemon, &leaf_der(&pki.path("server.crt"))).await;

    // In place: the same inodes truncated and written, as `cp` or an editor does.
    let pem = pki.ca.issue(&server_leaf("in place")).unwrap();
    std::fs::write(pki.path("server.crt"), &pem.cert).unwrap();
    std::fs::write(pki.path("server.key"), &pem.key).unwrap();
    until_served(&daemon, &leaf_der(&pki.path("server.crt"))).await;

    let logs = daemon.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("TLS files changed on disk") && l.contains("server.crt")),
        "{logs:#?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("reloaded the config")),
        "no reload: the files alone were read again"
    );
    daemon.echo_ok().await;
}

/// A certificate whose key has not been written (or is wrong) is refused: the old pair
/// keeps serving and the log says why. Once the matching key lands, the pair is served.
#[tokio::test]
async fn mismatched_pair_keeps_the_old_one_until_a_good_pair() {
    let pki = Arc::new(TestPki::new());
    let daemon = following(pki.clone(), "", "inotify").await;
    let old = leaf_der(&pki.path("server.crt"));

    let pem = pki.ca.issue(&server_leaf("half written")).unwrap();
    write_file(&pki.path("next.crt"), &pem.cert, 0o644).unwrap();
    std::fs::rename(pki.path("next.crt"), pki.path("server.crt")).unwrap();
    daemon
        .wait_for_log(|l| {
            l.contains("keeping the current TLS identity")
                && l.contains("TLS files changed on disk")
                && l.contains("do not go together")
        })
        .await;
    assert_eq!(
        served(&daemon).await.unwrap(),
        old,
        "the old pair still serves"
    );
    daemon.echo_ok().await;

    write_file(&pki.path("next.key"), &pem.key, 0o600).unwrap();
    std::fs::rename(pki.path("next.key"), pki.path("server.key")).unwrap();
    until_served(&daemon, &leaf_der(&pki.path("server.crt"))).await;
    daemon.echo_ok().await;
}

/// A client CA replaced on disk takes effect: a client of the new CA is accepted, one of
/// the old CA is not.
#[tokio::test]
async fn client_ca_changed_on_disk_takes_effect() {
    let pki = Arc::new(TestPki::new());
    let daemon = following(pki.clone(), "", "inotify").await;
    // The server's certificate is still from the old CA: clients check it with a copy.
    let server_ca = pki.path("server-ca.crt");
    std::fs::copy(pki.path("ca.crt"), &server_ca).unwrap();
    let other = Authority::new("another client CA").unwrap();
    let pem = other
        .issue(&Leaf::new(
            "client",
            &[crate::support::CLIENT_ID],
            Usage::Client,
            30,
        ))
        .unwrap();
    write_file(&pki.path("other-client.crt"), &pem.cert, 0o644).unwrap();
    write_file(&pki.path("other-client.key"), &pem.key, 0o600).unwrap();
    let dial = |name: &str| {
        Dial::mtls(
            &daemon.addr.to_string(),
            &server_ca,
            &pki.path(&format!("{name}.crt")),
            &pki.path(&format!("{name}.key")),
        )
        .unwrap()
    };
    let echo = |dial: Dial| async move {
        let channel = dial.connect().await.map_err(|e| e.to_string())?;
        vitals::proto::echo::echo_client::EchoClient::new(channel)
            .echo(vitals::proto::echo::EchoRequest::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(echo(dial("other-client")).await.is_err(), "not trusted yet");

    write_file(&pki.path("ca.new"), &other.cert_pem(), 0o644).unwrap();
    std::fs::rename(pki.path("ca.new"), pki.path("ca.crt")).unwrap();
    eventually(WAIT, || echo(dial("other-client"))).await;
    assert!(
        echo(dial("client")).await.is_err(),
        "a client of the old CA is refused"
    );
}

/// With `tls.watch = "poll"` (for filesystems inotify does not see into), a replaced pair
/// is served within the poll interval and the debounce.
#[tokio::test]
async fn polling_follows_replaced_files() {
    let pki = Arc::new(TestPki::new());
    let daemon = following(
        pki.clone(),
        "[tls]\nwatch = \"poll\"\nwatch_interval = \"200ms\"\nwatch_debounce = \"100ms\"\n",
        "polling",
    )
    .await;
    let (cert, key) = pki.issue("next", &server_leaf("polled"));
    std::fs::rename(&key, pki.path("server.key")).unwrap();
    std::fs::rename(&cert, pki.path("server.crt")).unwrap();
    until_served(&daemon, &leaf_der(&pki.path("server.crt"))).await;
}

/// Kubernetes' atomic writer (cert-manager's csi driver, projected secrets): the files are
/// symlinks through `..data`, which is swapped to a new timestamped directory in one rename.
#[tokio::test]
async fn a_swapped_data_symlink_is_followed() {
    let pki = Arc::new(TestPki::new());
    let mount = tempfile::tempdir().unwrap();
    let m = mount.path();
    let version = |name: &str, pem: &vitals::pki::Pem| {
        std::fs::create_dir(m.join(name)).unwrap();
        write_file(&m.join(name).join("tls.crt"), &pem.cert, 0o644).unwrap();
        write_file(&m.join(name).join("tls.key"), &pem.key, 0o600).unwrap();
    };
    let first = pki.ca.issue(&server_leaf("first")).unwrap();
    version("..2026_01_01_00_00_00.1", &first);
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", m.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", m.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", m.join("tls.key")).unwrap();
    let dropin = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        m.join("tls.crt").display(),
        m.join("tls.key").display()
    );
    let daemon = following(pki.clone(), &dropin, "inotify").await;
    assert_eq!(served(&daemon).await.unwrap(), leaf_der(&m.join("tls.crt")));

    let second = pki.ca.issue(&server_leaf("second")).unwrap();
    version("..2026_02_01_00_00_00.2", &second);
    std::os::unix::fs::symlink("..2026_02_01_00_00_00.2", m.join("..data_tmp")).unwrap();
    std::fs::rename(m.join("..data_tmp"), m.join("..data")).unwrap();
    std::fs::remove_dir_all(m.join("..2026_01_01_00_00_00.1")).unwrap();
    until_served(&daemon, &leaf_der(&m.join("tls.crt"))).await;
}

use std::net::TcpListener;

use crate::support::{TestDaemon, TestPki, run_vitalsd, write_config};

/// An unknown key in a drop-in names the drop-in file and the key, and exits 78.
#[tokio::test]
async fn unknown_key_in_dropin_exits_78() {
    let pki = TestPki::new();
    let dir = write_config(&pki, "[server]\nlisten_address = \"0.0.0.0:1\"\n");
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    let dropin = dir.path().join("vitalsd.d/50-test.toml");
    assert!(
        out.contains(&format!(
            "{}: `server.listen_address`: unknown field",
            dropin.display()
        )),
        "{out}"
    );
}

/// An invalid value exits 78 before anything is bound: the port stays free.
#[tokio::test]
async fn invalid_value_exits_78_before_binding() {
    let pki = TestPki::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dropin =
        format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\nmax_connection_idle = \"soon\"\n");
    let dir = write_config(&pki, &dropin);
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("`server.max_connection_idle`: `soon` is not a duration"),
        "{out}"
    );
    assert!(!out.contains("serving"), "{out}");
}

/// A bad environment override is reported as coming from the environment.
#[tokio::test]
async fn bad_environment_value_names_the_environment() {
    let pki = TestPki::new();
    let dir = write_config(&pki, "");
    let config = dir.path().join("vitalsd.toml");
    let env = [("VITALSD_SERVER__HANDSHAKE_TIMEOUT", "forever")];
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &env, dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("the environment: `server.handshake_timeout`"),
        "{out}"
    );
}

/// Environment variables override the files, lists included.
#[tokio::test]
async fn environment_overrides_files() {
    let daemon = TestDaemon::builder()
        .env("VITALSD_HEALTH__PLAINTEXT_LISTEN", "127.0.0.1:0")
        .start()
        .await;
    assert!(
        daemon.health_addr.is_some(),
        "the env var added a plaintext listener"
    );
}

/// `--check-config` validates and prints the effective config without serving.
#[tokio::test]
async fn check_config_prints_effective_values() {
    let pki = TestPki::new();
    let dir = write_config(&pki, "[server]\nmax_connections = 77\n");
    let config = dir.path().join("vitalsd.toml");
    let env = [("VITALSD_LOG__LEVEL", "debug")];
    let (code, out) = run_vitalsd(
        &["--config", config.to_str().unwrap(), "--check-config"],
        &env,
        dir.path(),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("max_connections = 77"), "{out}");
    assert!(out.contains("level = \"debug\""), "{out}");
    assert!(
        out.contains("max_connection_age_grace = \"30s\""),
        "defaults are shown: {out}"
    );
}

/// `--check-config` says where the push goes and which secret its token comes from,
/// never the token, nor a key in the URL's query.
#[tokio::test]
async fn check_config_shows_where_it_pushes() {
    let pki = TestPki::new();
    let secrets = tempfile::tempdir().unwrap();
    vitals::pki::write_file(
        &secrets.path().join("push-token"),
        "tok-3f9a-never-shown",
        0o600,
    )
    .unwrap();
    let dir = write_config(
        &pki,
        &format!(
            "[push]\nurl = \"https://receiver.example/api/v1/write?key=k-77-never-shown\"\nauth = \"bearer\"\nbearer_token = \"secret:push-token\"\n\n[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n",
            secrets.path().display()
        ),
    );
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(
        &["--config", config.to_str().unwrap(), "--check-config"],
        &[],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("# pushes remote_write to https://receiver.example/api/v1/write every 30s, with a bearer token from secret:push-token"),
        "{out}"
    );
    assert!(
        out.contains("push-token: "),
        "where the token comes from: {out}"
    );
    assert!(!out.contains("never-shown"), "{out}");
}

/// A missing `--config` file and unknown arguments are clear errors.
#[tokio::test]
async fn missing_file_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_vitalsd(&["--config", "/nonexistent/vitalsd.toml"], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("/nonexistent/vitalsd.toml: no such file"),
        "{out}"
    );
    let (code, out) = run_vitalsd(&["--frobnicate"], &[], dir.path());
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("--frobnicate"), "{out}");
}

/// `--dev` makes a dev PKI in certs/dev and serves mTLS with it.
#[tokio::test]
async fn dev_mode_makes_pki_and_serves() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    // Port 50051 may be taken by a developer's own daemon, so the dev listener is overridden
    // with port 0 and the bound address read from the "serving" line: a port picked free
    // and released first can be taken by another test's outgoing connection meanwhile.
    let mut child = crate::support::vitalsd_command()
        .arg("--dev")
        .env("VITALSD_SERVER__LISTEN", "127.0.0.1:0")
        .env("VITALSD_LOG__FORMAT", "json")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (fields, _logs) = crate::support::wait_serving(&mut child).await;
    let addr = crate::support::first_listen(&fields["listen"]).to_string();
    let pki = dir.path().join("certs/dev");
    crate::support::eventually(std::time::Duration::from_secs(10), || {
        let dial = vitals::client::Dial::dev(&addr, &pki);
        async move {
            let channel = dial
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            vitals::proto::health::health_client::HealthClient::new(channel)
                .check(vitals::proto::health::HealthCheckRequest::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    for file in vitals::pki::FILES {
        assert!(pki.join(file).is_file(), "{file}");
    }
}

/// The text between `start` (a line of README.md) and the next line `end`.
fn readme_block(start: &str, end: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let from = readme
        .find(start)
        .unwrap_or_else(|| panic!("README.md has no `{start}`"));
    let rest = &readme[from + start.len()..];
    let to = rest.find(end).expect("the block ends");
    rest[..to].trim_start_matches('\n').to_string()
}

/// The README's drop-in pattern as written: `10-device.toml` (the device's key from a
/// systemd credential, the prober's grants) and then `20-prometheus.toml` (Prometheus' grant)
/// both hold, since the grants of every layer accumulate: the prober calls echo and metrics
/// and reads the page, Prometheus reads the page and nothing else, and `--check-config`
/// names each rule's file.
#[tokio::test]
async fn readme_dropins_accumulate_grants() {
    use tonic::Code;
    use vitals::pki::{Leaf, Usage};

    let device = readme_block(
        "cat > /etc/vitalsd/vitalsd.d/10-device.toml <<'TOML'\n",
        "\nTOML\n",
    );
    let prometheus = readme_block("# /etc/vitalsd/vitalsd.d/20-prometheus.toml\n", "```");
    assert!(device.contains("[[auth.rules]]") && prometheus.contains("[[auth.rules]]"));
    let pki = std::sync::Arc::new(TestPki::new());
    for (name, uri) in [
        ("prober", "spiffe://fleet.example/prober"),
        ("prometheus", "spiffe://fleet.example/prometheus"),
    ] {
        pki.issue(name, &Leaf::new(name, &[uri], Usage::Client, 1));
    }
    let credentials = tempfile::tempdir().unwrap();
    std::fs::copy(
        pki.path("server.key"),
        credentials.path().join("server.key"),
    )
    .unwrap();
    let daemon = TestDaemon::builder()
        .pki(pki.clone())
        .dropin_file("10-device.toml", &device)
        .dropin_file("20-prometheus.toml", &prometheus)
        // The README listens on 0.0.0.0:50051; the test on a free loopback port.
        .env("VITALSD_SERVER__LISTEN", "127.0.0.1:0")
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .start()
        .await;
    let addr = daemon.addr.to_string();

    let prober = daemon.dial_as("prober").connect().await.unwrap();
    vitals::proto::echo::echo_client::EchoClient::new(prober.clone())
        .echo(vitals::proto::echo::EchoRequest {
            echo_message: "hi".into(),
            ..Default::default()
        })
        .await
        .expect("the prober's grant from 10-device.toml");
    vitals::proto::metrics::metrics_client::MetricsClient::new(prober)
        .snapshot(vitals::proto::metrics::SnapshotRequest {})
        .await
        .expect("the prober's grant from 10-device.toml");
    for who in ["prober", "prometheus"] {
        let page = crate::support::prometheus::https_client(&addr, &pki, who, b"http/1.1");
        let (status, _) = crate::support::prometheus::get(&page, "/metrics", &[]).await;
        assert_eq!(status, 200, "{who} reads /metrics");
    }
    let prometheus = daemon.dial_as("prometheus").connect().await.unwrap();
    let denied = vitals::proto::echo::echo_client::EchoClient::new(prometheus)
        .echo(vitals::proto::echo::EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let config = daemon.config_dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(
        &["--config", config.to_str().unwrap(), "--check-config"],
        &[(
            "CREDENTIALS_DIRECTORY",
            credentials.path().to_str().unwrap(),
        )],
        daemon.config_dir.path(),
    );
    assert_eq!(code, Some(0), "{out}");
    let dropins = daemon.config_dir.path().join("vitalsd.d");
    for (rule, file) in [
        (0, config.clone()),
        (1, dropins.join("10-device.toml")),
        (2, dropins.join("20-prometheus.toml")),
    ] {
        let line = format!("#   auth.rules[{rule}]: {}\n", file.display());
        assert!(out.contains(&line), "{line}: {out}");
    }
}

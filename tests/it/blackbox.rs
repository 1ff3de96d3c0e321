//! Prometheus blackbox_exporter's gRPC prober against vitalsd, with the modules of
//! docs/blackbox_exporter.yml: what a fleet's probing sees for readiness and liveness.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use crate::support::{TestDaemon, TestPki, eventually, free_port, require};

/// A blackbox_exporter on loopback, killed when dropped.
struct Blackbox {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Blackbox {
    /// Starts Debian's exporter on docs/blackbox_exporter.yml, its certificate paths pointed
    /// at `pki`'s CA and client certificate.
    async fn start(pki: &TestPki) -> Blackbox {
        require(
            "prometheus-blackbox-exporter",
            "prometheus-blackbox-exporter",
        );
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/blackbox_exporter.yml"
        ))
        .unwrap();
        let config = example
            .replace(
                "/etc/blackbox_exporter/vitals/ca.crt",
                &pki.path("ca.crt").display().to_string(),
            )
            .replace(
                "/etc/blackbox_exporter/vitals/prober.crt",
                &pki.path("client.crt").display().to_string(),
            )
            .replace(
                "/etc/blackbox_exporter/vitals/prober.key",
                &pki.path("client.key").display().to_string(),
            );
        assert_ne!(
            config, example,
            "the example's certificate paths were not found"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blackbox.yml");
        std::fs::write(&file, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus-blackbox-exporter")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("blackbox_exporter starts");
        let blackbox = Blackbox {
            child,
            addr,
            _dir: dir,
        };
        eventually(Duration::from_secs(10), || {
            let up = blackbox.get("/-/healthy").map(|_| ());
            async move { up }
        })
        .await;
        blackbox
    }

    /// GET `path`, HTTP/1.0: the body.
    fn get(&self, path: &str) -> Result<String, String> {
        let mut tcp = TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(tcp, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        tcp.read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP response")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(head.lines().next().unwrap_or_default().to_string());
        }
        Ok(body.to_string())
    }

    /// `probe_success` of one probe of `target` with `module`.
    fn probe(&self, module: &str, target: &str) -> f64 {
        let body = self
            .get(&format!(
                "/probe?module={module}&target={target}&debug=false"
            ))
            .unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix("probe_success "))
            .unwrap_or_else(|| panic!("no probe_success in:\n{body}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Blackbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A healthy device: the readiness modules (`""` and a service) and the liveness module all
/// succeed over mutual TLS.
#[tokio::test]
async fn blackbox_exporter_sees_a_healthy_device() {
    let pki = Arc::new(TestPki::new());
    let daemon = TestDaemon::builder().pki(pki.clone()).start().await;
    let blackbox = Blackbox::start(&pki).await;
    let target = daemon.addr.to_string();
    for module in ["vitals_ready", "vitals_echo_ready", "vitals_live"] {
        assert_eq!(blackbox.probe(module, &target), 1.0, "{module}");
    }
}

/// A device whose disk check fails: readiness probes fail (overall and for the service),
/// liveness still succeeds, so a restart policy on liveness leaves the device alone.
#[tokio::test]
async fn blackbox_exporter_sees_readiness_fail_and_liveness_hold() {
    let pki = Arc::new(TestPki::new());
    let daemon = TestDaemon::builder()
        .pki(pki.clone())
        .dropin("[health]\nmin_disk_free_percent = 99.9\n")
        .start()
        .await;
    let blackbox = Blackbox::start(&pki).await;
    let target = daemon.addr.to_string();
    assert_eq!(blackbox.probe("vitals_ready", &target), 0.0);
    assert_eq!(blackbox.probe("vitals_echo_ready", &target), 0.0);
    assert_eq!(blackbox.probe("vitals_live", &target), 1.0);
}

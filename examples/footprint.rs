//! Footprint measurements for the benchmarks, against the real daemon:
//!
//!   footprint startup VITALSD CONFIG [RUNS]
//!       exec to READY=1 (on a NOTIFY_SOCKET this tool owns) and exec to the first
//!       successful health check, median and max over RUNS starts.
//!   footprint hold ADDR PKI_DIR CONNECTIONS SECONDS
//!       opens CONNECTIONS mutual-TLS HTTP/2 connections, makes one health call on each,
//!       holds them open (the daemon's keepalive pings them) for SECONDS, then closes.
//!   footprint handshakes ADDR PKI_DIR SECONDS full|resumed [tls12]
//!       mutual-TLS handshakes one after another for SECONDS, each read until the server's
//!       first HTTP/2 bytes (so a TLS 1.3 ticket is taken), then closed with close_notify;
//!       `resumed` keeps the client's session cache (every handshake after the first
//!       resumes), `full` has none; `tls12` offers TLS 1.2 only. Prints how many, and how
//!       many resumed.
//!   footprint tls-cost PKI_DIR COUNT full|resumed [tls12]
//!       the TLS handshake alone, in memory (no socket, no kernel, no HTTP/2): COUNT
//!       handshakes between a rustls client and vitalsd's own server config
//!       (`tls::server_config`, client certificate verified), timing only the server's side
//!       (reading the client's flights, processing, writing its own, the session ticket
//!       included). Prints the median and mean server time per handshake.
#![forbid(unsafe_code)]

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vitals::{
    client::Dial,
    proto::health::{HealthCheckRequest, health_client::HealthClient},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("startup") if args.len() >= 3 => {
            let runs = args.get(3).map_or(Ok(10), |r| r.parse())?;
            startup(&args[1], Path::new(&args[2]), runs).await
        }
        Some("tls-cost") if args.len() >= 4 => tls_cost(
            Path::new(&args[1]),
            args[2].parse()?,
            args[3] == "resumed",
            args.get(4).is_some_and(|a| a == "tls12"),
        ),
        Some("hold") if args.len() == 5 => {
            hold(
                &args[1],
                Path::new(&args[2]),
                args[3].parse()?,
                args[4].parse()?,
            )
            .await
        }
        Some("handshakes") if args.len() == 5 || args.len() == 6 => {
            handshakes(
                &args[1],
                Path::new(&args[2]),
                Duration::from_secs(args[3].parse()?),
                args[4] == "resumed",
                args.get(5).is_some_and(|a| a == "tls12"),
            )
            .await
        }
        _ => anyhow::bail!(
            "usage: footprint startup VITALSD CONFIG [RUNS] | hold ADDR PKI CONNECTIONS SECONDS | handshakes ADDR PKI SECONDS full|resumed"
        ),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn startup(vitalsd: &str, config: &Path, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_secs(5)))?;
    let text = std::fs::read_to_string(config)?;
    let addr = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("listen = [\""))
        .and_then(|l| l.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("the config needs `listen = [\"ADDR\"]` with a fixed port"))?
        .to_string();
    let pki = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("client_ca = \""))
        .and_then(|l| l.strip_suffix("ca.crt\""))
        .ok_or_else(|| anyhow::anyhow!("the config needs client_ca = \"DIR/ca.crt\" of a dev PKI"))?
        .to_string();
    let dial = Dial::dev(&addr, Path::new(&pki))?;
    let (mut to_ready, mut to_serving) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = Command::new(vitalsd)
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut buf = [0u8; 512];
        loop {
            let n = notify.recv(&mut buf)?;
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                break;
            }
        }
        to_ready.push(started.elapsed().as_secs_f64() * 1000.0);
        // The first health check that succeeds on a fresh connection.
        loop {
            if let Ok(channel) = dial.connect().await
                && HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok()
            {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(5),
                "not serving after 5 s"
            );
        }
        to_serving.push(started.elapsed().as_secs_f64() * 1000.0);
        Command::new("kill").arg(child.id().to_string()).status()?;
        child.wait()?;
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "startup exec_to_ready_ms_median={:.1} exec_to_ready_ms_max={:.1} exec_to_first_check_ms_median={:.1} exec_to_first_check_ms_max={:.1} runs={runs}",
        median(to_ready.clone()),
        max(&to_ready),
        median(to_serving.clone()),
        max(&to_serving)
    );
    Ok(())
}

async fn hold(addr: &str, pki: &Path, connections: usize, seconds: u64) -> anyhow::Result<()> {
    let dial = Dial::dev(addr, pki)?;
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        let channel = dial
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connection {i}: {e:#}"))?;
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await?;
        held.push(channel);
    }
    println!("holding {} connections for {seconds}s", held.len());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Ok(())
}

/// The client config of `handshakes` and `tls-cost`: the dev client certificate, TLS 1.3
/// (or 1.2 only), a session cache when `resume`.
fn client_config(pki: &Path, resume: bool, tls12: bool) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = if tls12 {
        let mut roots = rustls::RootCertStore::empty();
        for cert in vitals::tls::load_certs(&pki.join("ca.crt"))? {
            roots.add(cert)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(vitals::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vitals::tls::load_certs(&pki.join("client.crt"))?,
                vitals::tls::load_key(&pki.join("client.key"))?,
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
    } else {
        vitals::tls::client_config(
            &pki.join("ca.crt"),
            vitals::tls::ClientAuth::Certificate {
                cert: &pki.join("client.crt"),
                key: &pki.join("client.key"),
            },
        )?
    };
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

fn tls_cost(pki: &Path, count: usize, resume: bool, tls12: bool) -> anyhow::Result<()> {
    use std::sync::Arc;
    let server = vitals::tls::server_config(
        &pki.join("server.crt"),
        vitals::tls::Key::load(&pki.join("server.key"))?,
        &pki.join("ca.crt"),
        &[],
    )?
    .config;
    let client = Arc::new(client_config(pki, resume, tls12)?);
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut times = Vec::with_capacity(count);
    let mut resumed = 0;
    let mut buf = Vec::with_capacity(16 * 1024);
    // One warm-up handshake: it fills the client's session cache for `resumed`.
    for round in 0..=count {
        let mut c = rustls::ClientConnection::new(client.clone(), name.clone())?;
        let mut s = rustls::ServerConnection::new(server.clone())?;
        let mut spent = Duration::ZERO;
        // Until both sides are done and nothing is left to send (the ticket comes after).
        loop {
            let mut moved = false;
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf)?;
            }
            if !buf.is_empty() {
                moved = true;
                let start = Instant::now();
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    s.read_tls(&mut rd)?;
                }
                s.process_new_packets()?;
                spent += start.elapsed();
            }
            buf.clear();
            let start = Instant::now();
            while s.wants_write() {
                s.write_tls(&mut buf)?;
            }
            spent += start.elapsed();
            if !buf.is_empty() {
                moved = true;
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    c.read_tls(&mut rd)?;
                }
                c.process_new_packets()?;
            }
            if !moved && !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        if round > 0 {
            times.push(spent.as_secs_f64() * 1e6);
            if s.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                resumed += 1;
            }
        }
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!(
        "{{\"handshakes\": {count}, \"resumed\": {resumed}, \"server_us_median\": {:.1}, \"server_us_mean\": {mean:.1}}}",
        median(times)
    );
    Ok(())
}

async fn handshakes(
    addr: &str,
    pki: &Path,
    seconds: Duration,
    resume: bool,
    tls12: bool,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = client_config(pki, resume, tls12)?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let until = Instant::now() + seconds;
    let (mut count, mut resumed) = (0u64, 0u64);
    while Instant::now() < until {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = connector.connect(name.clone(), tcp).await?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await?;
        let mut first = [0u8; 9];
        tls.read_exact(&mut first).await?;
        if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            resumed += 1;
        }
        let _ = tls.shutdown().await;
        count += 1;
    }
    println!("{{\"handshakes\": {count}, \"resumed\": {resumed}}}");
    Ok(())
}

//! Footprint measurements for the benchmarks, against the real daemon:
//!
//!   footprint startup VITALSD CONFIG [RUNS]
//!       exec to READY=1 (on a NOTIFY_SOCKET this tool owns) and exec to the first
//!       successful health check, median and max over RUNS starts.
//!   footprint hold ADDR PKI_DIR CONNECTIONS SECONDS
//!       opens CONNECTIONS mutual-TLS HTTP/2 connections, makes one health call on each,
//!       holds them open (the daemon's keepalive pings them) for SECONDS, then closes.
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
        Some("hold") if args.len() == 5 => {
            hold(
                &args[1],
                Path::new(&args[2]),
                args[3].parse()?,
                args[4].parse()?,
            )
            .await
        }
        _ => anyhow::bail!(
            "usage: footprint startup VITALSD CONFIG [RUNS] | hold ADDR PKI CONNECTIONS SECONDS"
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

//! What one `/metrics` render costs: wall time per render of each format, in process.
//!
//! ```text
//! cargo run --release --example scrape_cost [RENDERS]
//! ```
//!
//! RENDERS (per round, default 200) of this machine's own snapshot, with every routed method
//! called a few times so the histograms are populated, each render reading the live
//! sources (sampler/live.rs) as a scrape does; the median of 15 rounds per format,
//! the formats interleaved round by round. The page is not gzipped here (flate2's cost is
//! the same whatever writes the text). `scripts/bench.sh` measures a scrape end to end.

use std::{
    hint::black_box,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use vitals::{
    health::Health,
    methods,
    rpc_stats::RpcStats,
    sampler::{Live, Sampler},
    series::DaemonStats,
    service::scrape::{Format, ScrapeService},
};

fn main() -> ExitCode {
    let renders = match std::env::args().nth(1).map(|a| a.parse::<u32>()) {
        None => 200,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: scrape_cost [RENDERS (default 200)]");
            return ExitCode::from(2);
        }
    };
    let mut sampler = Sampler::new();
    std::thread::sleep(Duration::from_millis(250));
    let snapshot = Arc::new(sampler.sample());
    let stats = Arc::new(RpcStats::new());
    for (i, m) in methods::ALL.iter().enumerate() {
        let method = stats.method(m.path);
        for n in 0..5u64 {
            method.start();
            let code = if n == 4 && i % 2 == 0 {
                tonic::Code::Unavailable
            } else {
                tonic::Code::Ok
            };
            method.finish(code, Duration::from_micros(150 * (n + 1) * (i as u64 + 1)));
        }
    }
    let daemon = Arc::new(DaemonStats::default());
    daemon
        .cert_not_after
        .store(1_800_000_000, std::sync::atomic::Ordering::Relaxed);
    let (_tx, rx) = tokio::sync::watch::channel(snapshot.clone());
    let health = Health::new(&methods::LIVENESS_SERVICES, &methods::READINESS_SERVICES);
    let live = Arc::new(std::sync::Mutex::new(Live::new(Default::default())));
    let service = ScrapeService::new(rx, std::time::Instant::now(), stats, health, daemon, live);

    let formats = [
        ("text 0.0.4", Format::Text),
        ("OpenMetrics", Format::OpenMetrics),
    ];
    let mut rounds: Vec<Vec<Duration>> = vec![Vec::new(); formats.len()];
    let mut bytes = [0; 2];
    for round in 0..16 {
        for (i, (_, format)) in formats.iter().enumerate() {
            let started = Instant::now();
            for _ in 0..renders {
                match service.render(&snapshot, *format) {
                    Ok(page) => bytes[i] = black_box(page).len(),
                    Err(err) => {
                        eprintln!("scrape_cost: {err}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            // The first round warms caches and the allocator.
            if round > 0 {
                rounds[i].push(started.elapsed() / renders);
            }
        }
    }
    for (i, (name, _)) in formats.iter().enumerate() {
        rounds[i].sort_unstable();
        let median = rounds[i][rounds[i].len() / 2];
        println!(
            "{name}: {:.1} µs per render (median of {} rounds of {renders}; fastest {:.1}), {} bytes",
            median.as_secs_f64() * 1e6,
            rounds[i].len(),
            rounds[i][0].as_secs_f64() * 1e6,
            bytes[i],
        );
    }
    ExitCode::SUCCESS
}

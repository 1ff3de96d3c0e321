//! Attacks on the daemon's memory: bodies announced and never sent, and compression bombs;
//! what is reserved or inflated must stay bounded, and return.

use std::time::Duration;

use bytes::Bytes;

use super::harness::{
    Footprint, PROMPT, RSS_MARGIN_KIB, attack_and_recover, baseline, gzip_zeros, raw_status,
    serve_once, settled,
};
use crate::support::{TestDaemon, TestDaemonBuilder, eventually, raw};

/// 128 streams each announcing a 4 MiB message (the limit) but sending 1 KiB of it, held
/// for 2 s: the handlers wait for bodies that never come; the reservations are not touched,
/// so RSS grows by a few MiB, not 512 MiB, and all of it returns.
#[tokio::test]
async fn announced_bodies() {
    let daemon = TestDaemon::start("").await;
    let (report, _, after) = attack_and_recover(
        &daemon,
        "announced_bodies",
        &["--count", "128", "--hold", "2"],
    )
    .await;
    assert_eq!(report["outcome"], "open", "{report}");
    assert!(
        after.hwm_kib < after.rss_kib + 64 * 1024,
        "peak {} KiB",
        after.hwm_kib
    );
}

/// 10 gzip and 10 zstd bombs on one connection; each must be RESOURCE_EXHAUSTED. The
/// footprint once settled.
async fn bomb_round(daemon: &TestDaemon, bombs: &[(&str, Bytes)]) -> Footprint {
    let mut conn = daemon.raw_connect().await;
    for (encoding, frame) in bombs {
        for _ in 0..10 {
            let (code, message) =
                raw_status(&mut conn, &[("grpc-encoding", encoding)], frame.clone()).await;
            assert_eq!(code, "8", "{encoding}: {message}");
        }
    }
    drop(conn);
    settled(daemon).await
}

/// Starts `daemon`, takes the baseline, and runs six rounds of 20 compression bombs
/// (64 KiB of gzip and 2 KiB of zstd, each inflating to 64 MiB; the limit is 4 MiB).
/// Returns the baseline and the footprint after each round.
async fn bomb_rounds(name: &str, daemon: TestDaemonBuilder) -> (Footprint, Vec<Footprint>) {
    let daemon = daemon.start().await;
    let base = baseline(&daemon).await;
    let size = 64 << 20;
    let gzip = gzip_zeros(size);
    let zstd = raw::zstd_bomb(size);
    let bombs = [
        ("gzip", raw::frame_raw(true, gzip.len() as u32, &gzip)),
        ("zstd", raw::frame_raw(true, zstd.len() as u32, &zstd)),
    ];
    let mut rounds = Vec::new();
    for _ in 0..6 {
        rounds.push(bomb_round(&daemon, &bombs).await);
    }
    let peak = rounds.last().unwrap().hwm_kib;
    eprintln!(
        "hostile: {name}: gzip {} B, zstd {} B, each inflating to {size} B: 120 x RESOURCE_EXHAUSTED; rss baseline {} KiB, after each round of 20 {:?} KiB, peak {peak} KiB",
        gzip.len(),
        zstd.len(),
        base.rss_kib,
        rounds.iter().map(|r| r.rss_kib).collect::<Vec<_>>(),
    );
    assert!(
        peak < base.rss_kib + 32 * 1024,
        "a bomb inflated far past the limit: peak {peak} KiB"
    );
    let served = serve_once(&daemon).await.unwrap();
    assert!(served < PROMPT, "{served:?}");
    eventually(Duration::from_secs(10), || async {
        let fds = Footprint::of(&daemon).fds;
        (fds == base.fds)
            .then_some(())
            .ok_or_else(|| format!("{fds} fds, baseline {}", base.fds))
    })
    .await;
    (base, rounds)
}

/// Compression bombs are RESOURCE_EXHAUSTED and inflated only up to the limit (peak RSS far
/// below 64 MiB). Memory plateaus: the last three of six rounds leave RSS where the third
/// did (no leak). It plateaus above the baseline, though: tonic inflates into a buffer of
/// up to max_message_size (4 MiB) and frees it after the call, but glibc raises its mmap
/// threshold once a 4 MiB mmapped block is freed, so later 4 MiB buffers come from, and
/// stay in, malloc's per-thread arenas: about 5 MiB per runtime worker thread (+10 MiB on
/// this 2-core machine), the same for any legitimate 4 MiB message.
#[tokio::test]
async fn compression_bombs() {
    let (base, rounds) = bomb_rounds("compression_bombs", TestDaemon::builder()).await;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let margin = workers * 6 * 1024 + RSS_MARGIN_KIB;
    let last = rounds.last().unwrap().rss_kib;
    assert!(
        last <= rounds[2].rss_kib + 1024,
        "RSS grew from round to round: {rounds:?}"
    );
    assert!(
        last <= base.rss_kib + margin,
        "RSS {last} KiB, baseline {} + {margin} KiB",
        base.rss_kib
    );
}

/// With glibc's mmap threshold fixed at 256 KiB (`GLIBC_TUNABLES`, no code change), the
/// 4 MiB inflation buffers are mmapped and unmapped every time and RSS returns to within
/// [`RSS_MARGIN_KIB`] of the baseline after compression bombs.
#[tokio::test]
async fn compression_bombs_fixed_mmap_threshold() {
    let daemon = TestDaemon::builder().env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=262144");
    let (base, rounds) = bomb_rounds("compression_bombs_fixed_mmap_threshold", daemon).await;
    for round in &rounds {
        assert!(
            round.rss_kib <= base.rss_kib + RSS_MARGIN_KIB,
            "RSS {} KiB, baseline {} KiB: {rounds:?}",
            round.rss_kib,
            base.rss_kib
        );
    }
}

/// Opens `streams` calls of `path` on each of `conns` new connections as `who`, each
/// sending the first `sent` bytes of a message announced as `announced`, never finished;
/// the gRPC status each got, counted.
async fn held_messages(
    daemon: &TestDaemon,
    who: &str,
    path: &'static str,
    (conns, streams): (usize, usize),
    announced: u32,
    sent: usize,
) -> std::collections::BTreeMap<String, usize> {
    let body = raw::frame_raw(false, announced, &vec![b'a'; sent]);
    let mut calls = tokio::task::JoinSet::new();
    let mut held = Vec::new();
    for _ in 0..conns {
        let tls = daemon.client_tls(vitals::tls::ClientAuth::Certificate {
            cert: &daemon.pki.path(&format!("{who}.crt")),
            key: &daemon.pki.path(&format!("{who}.key")),
        });
        let conn = raw::connect(daemon.addr, tls).await;
        for _ in 0..streams {
            let (mut send, body) = (conn.send.clone(), body.clone());
            calls.spawn(async move {
                match raw::call_ending(&mut send, path, &[], body, false).await {
                    Ok(reply) => reply.grpc_status.unwrap_or_else(|| "none".into()),
                    Err(e) => format!("reset: {e}"),
                }
            });
        }
        held.push(conn);
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = calls.join_next().await {
        *statuses.entry(status.unwrap()).or_insert(0) += 1;
    }
    statuses
}

/// A client with a valid certificate but no grant (public methods only) opens 64
/// Health/Watch streams on each of 4 connections. Announcing 4 MiB messages, every one is
/// refused at once (RESOURCE_EXHAUSTED: health requests are 4 KiB at most); announcing
/// 4 KiB and sending all but its last byte, each is held only until
/// `server.first_message_timeout` (2 s here), then DEADLINE_EXCEEDED. RSS stays within
/// a few MiB throughout (peak), a well-behaved client is served, and all of it returns.
#[tokio::test]
async fn public_watch_streams_held_open() {
    let pki = std::sync::Arc::new(crate::support::TestPki::new());
    pki.issue(
        "nogrant",
        &vitals::pki::Leaf::new(
            "n",
            &["spiffe://test.vitals/nogrant"],
            vitals::pki::Usage::Client,
            1,
        ),
    );
    let daemon = TestDaemon::builder()
        .pki(pki)
        .dropin("[server]\nfirst_message_timeout = \"2s\"\n")
        .start()
        .await;
    let base = baseline(&daemon).await;
    let prober = super::harness::Prober::start(&daemon).await;
    const WATCH: &str = "/grpc.health.v1.Health/Watch";
    let big = held_messages(&daemon, "nogrant", WATCH, (4, 64), (4 << 20) - 1, 16 << 10).await;
    assert_eq!(big.get("8"), Some(&256), "{big:?}");
    let started = std::time::Instant::now();
    let small = held_messages(&daemon, "nogrant", WATCH, (4, 64), 4096, 4095).await;
    let held = started.elapsed();
    assert_eq!(small.get("4"), Some(&256), "{small:?}");
    assert!(
        held >= Duration::from_millis(1900) && held < Duration::from_secs(6),
        "held {held:?}, the first-message timeout is 2 s"
    );
    prober.finish("public_watch_streams_held_open").await;
    let server = daemon.snapshot().await.server.unwrap();
    assert_eq!(server.first_message_timeouts, 256, "{server:?}");
    let after =
        super::harness::assert_recovered(&daemon, "public_watch_streams_held_open", base).await;
    eprintln!(
        "hostile: public_watch_streams_held_open: 4 MiB announced: {big:?}; 4 KiB - 1 held: {small:?} for {held:?}; peak +{} KiB",
        after.hwm_kib.saturating_sub(base.rss_kib)
    );
    assert!(
        after.hwm_kib < base.rss_kib + 16 * 1024,
        "peak {} KiB over a baseline of {} KiB",
        after.hwm_kib,
        base.rss_kib
    );
}

/// A granted client opens 8 echo calls on each of 4 connections, each sending all but the
/// last byte of a 4 MiB message (128 MiB in all). With `server.max_request_buffer` at
/// 8 MiB, the daemon holds at most that: the calls that would pass it get
/// RESOURCE_EXHAUSTED at once, the ones held end at `max_deadline` (3 s here). Peak RSS
/// stays under the budget plus a constant (the connections' HTTP/2 windows, 1 MiB each),
/// small calls are served throughout, and memory returns.
#[tokio::test]
async fn request_buffer_budget() {
    let daemon =
        TestDaemon::start("[server]\nmax_request_buffer = \"8MiB\"\nmax_deadline = \"3s\"\n").await;
    let base = baseline(&daemon).await;
    let prober = super::harness::Prober::start(&daemon).await;
    let statuses = held_messages(
        &daemon,
        "client",
        super::harness::ECHO,
        (4, 8),
        4 << 20,
        (4 << 20) - 1,
    )
    .await;
    prober.finish("request_buffer_budget").await;
    let refused = statuses.get("8").copied().unwrap_or(0);
    let timed_out = statuses.get("4").copied().unwrap_or(0);
    assert_eq!(refused + timed_out, 32, "{statuses:?}");
    // 8 MiB holds one message (past its first 4 KiB) and most of a second.
    assert!((1..=2).contains(&timed_out), "{statuses:?}");
    let server = daemon.snapshot().await.server.unwrap();
    assert_eq!(server.request_buffer_bytes, 0, "released: {server:?}");
    assert!(server.request_buffer_refusals >= 30, "{server:?}");
    let after = super::harness::assert_recovered(&daemon, "request_buffer_budget", base).await;
    let peak = after.hwm_kib.saturating_sub(base.rss_kib);
    eprintln!(
        "hostile: request_buffer_budget: 32 x 4 MiB - 1 held: {statuses:?}; peak +{peak} KiB (budget 8192 KiB)"
    );
    assert!(peak < 8 * 1024 + 12 * 1024, "peak +{peak} KiB");
}

/// The unit's `GLIBC_TUNABLES`, as systemd/vitalsd.service sets it.
fn unit_tunables() -> String {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/vitalsd.service"
    ))
    .unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix("Environment=GLIBC_TUNABLES="))
        .expect("the unit sets GLIBC_TUNABLES")
        .to_string()
}

/// The daemon's environment variable `key`, as /proc/PID/environ has it.
fn environ(daemon: &TestDaemon, key: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{}/environ", daemon.pid())).unwrap();
    crate::support::environ_var(&raw, key)
}

/// 12 rounds of 300 mutual-TLS connections (a handshake and a health check each; 300 open
/// at once, then all closed): once the storm is over RSS is back within [`RSS_MARGIN_KIB`]
/// (2 MiB) of the baseline however the daemon was started: by hand (no `GLIBC_TUNABLES`),
/// with the unit's environment, and with a user's `GLIBC_TUNABLES` that says nothing of
/// the per-thread cache. The daemon fixes malloc's mmap threshold and trims its arenas
/// itself after connections close; glibc's per-thread cache (tcache), which no call can
/// empty and which pinned ~2.7 MiB, it sets small by executing itself again with
/// `glibc.malloc.tcache_count=1` unless the environment sets it (the unit does, so under
/// it there is no second exec). A user's other tunables are kept.
#[tokio::test]
async fn connection_storm_returns_memory() {
    let unit = unit_tunables();
    assert!(unit.contains("glibc.malloc.tcache_count=1"), "{unit}");
    for (name, daemon, tunables, reexecuted) in [
        (
            "connection_storm",
            TestDaemon::builder(),
            "glibc.malloc.tcache_count=1".to_string(),
            true,
        ),
        (
            "connection_storm_unit_env",
            TestDaemon::builder().env("GLIBC_TUNABLES", &unit),
            unit.clone(),
            false,
        ),
        (
            "connection_storm_user_tunables",
            TestDaemon::builder().env("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"),
            "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=1".to_string(),
            true,
        ),
    ] {
        let daemon = daemon.start().await;
        assert_eq!(environ(&daemon, "GLIBC_TUNABLES"), Some(tunables), "{name}");
        assert_eq!(
            environ(&daemon, "VITALS_MALLOC_REEXECUTED").is_some(),
            reexecuted,
            "{name}: executed again"
        );
        let base = baseline(&daemon).await;
        let started = std::time::Instant::now();
        for _ in 0..12 {
            // 300 open at once, made 30 at a time (under three quarters of
            // max_handshakes, 64, from one address, so no handshake is hurried: this
            // measures memory, not the pressure timeout), then all closed together.
            let mut open = Vec::new();
            for _ in 0..10 {
                let mut batch = tokio::task::JoinSet::new();
                for _ in 0..30 {
                    let dial = daemon.dial();
                    batch.spawn(async move {
                        let channel = dial.connect().await.map_err(|e| format!("{e:#}"))?;
                        let mut health =
                            vitals::proto::health::health_client::HealthClient::new(channel);
                        health
                            .check(vitals::proto::health::HealthCheckRequest::default())
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>(health)
                    });
                }
                while let Some(done) = batch.join_next().await {
                    open.push(done.unwrap().unwrap());
                }
            }
            drop(open);
        }
        let storm = started.elapsed();
        let peak = Footprint::of(&daemon).hwm_kib;
        let margin = RSS_MARGIN_KIB;
        eventually(Duration::from_secs(10), || async {
            let now = Footprint::of(&daemon);
            (now.fds == base.fds && now.rss_kib <= base.rss_kib + margin)
                .then_some(())
                .ok_or_else(|| format!("{now:?}, baseline {base:?} + {margin} KiB"))
        })
        .await;
        let after = Footprint::of(&daemon);
        eprintln!(
            "hostile: {name}: 3600 connections in {} ms; rss {} KiB, peak {peak} KiB, after {} KiB (+{} KiB)",
            storm.as_millis(),
            base.rss_kib,
            after.rss_kib,
            after.rss_kib.saturating_sub(base.rss_kib)
        );
        assert_recovered_served(&daemon, name).await;
    }
}

/// A new client is served promptly after an attack.
async fn assert_recovered_served(daemon: &TestDaemon, name: &str) {
    let served = serve_once(daemon).await.unwrap();
    assert!(served < PROMPT, "{name}: served after {served:?}");
}

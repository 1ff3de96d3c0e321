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

use std::time::Duration;

use vitals::proto::{echo::EchoRequest, metrics::WatchRequest};

use crate::support::TestDaemon;

/// A snapshot describes the host, CPU, memory, filesystems, network, the daemon itself,
/// and the RPCs it served.
#[tokio::test]
async fn snapshot_has_device_and_rpc_stats() {
    let daemon = TestDaemon::start("").await;
    let mut echo = daemon.echo().await;
    for _ in 0..3 {
        echo.echo(EchoRequest::default()).await.unwrap();
    }
    let s = daemon.snapshot().await;
    let host = s.host.clone().unwrap();
    assert!(!host.hostname.is_empty());
    // Under qemu-user the ARM daemon reports the emulated machine (aarch64, armv7l).
    let arch = std::env::var("VITALS_TEST_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.into());
    assert_eq!(host.arch, arch);
    assert!(host.uptime_secs > 0 && host.boot_time_unix_secs > 1_600_000_000);
    let cpu = s.cpu.clone().unwrap();
    assert!(!cpu.cores.is_empty());
    assert!(s.memory.as_ref().unwrap().total_bytes > 0);
    assert!(s.filesystems.iter().any(|f| f.total_bytes > 0));
    assert!(s.networks.iter().any(|n| n.name == "lo"));
    let process = s.process.unwrap();
    assert_eq!(process.pid, daemon.pid());
    assert!(process.rss_bytes > 0 && process.open_fds > 0 && process.threads > 0);
    let echo_stats = crate::support::method_stats(&s, "/vitals.echo.v1.Echo/Echo");
    assert_eq!(echo_stats.calls, 3);
    assert_eq!(echo_stats.statuses[0].code, "OK");
    assert_eq!(echo_stats.statuses[0].count, 3);
    assert_eq!(echo_stats.latency.iter().map(|b| b.count).sum::<u64>(), 3);
}

/// Failed calls are counted by status code.
#[tokio::test]
async fn failed_calls_are_counted_by_code() {
    let daemon = TestDaemon::start("").await;
    let mut echo = daemon.echo().await;
    let fail = EchoRequest {
        status_code: 9,
        ..Default::default()
    };
    for _ in 0..2 {
        echo.echo(fail.clone()).await.unwrap_err();
    }
    let s = daemon.snapshot().await;
    let stats = crate::support::method_stats(&s, "/vitals.echo.v1.Echo/Echo");
    let codes: Vec<_> = stats
        .statuses
        .iter()
        .map(|c| (c.code.as_str(), c.count))
        .collect();
    assert_eq!(codes, [("FAILED_PRECONDITION", 2)]);
}

/// Watch streams snapshots at the asked interval, raised to the sampler's.
#[tokio::test]
async fn watch_streams_snapshots() {
    let daemon = TestDaemon::start("").await; // sample_interval = 1s
    let mut stream = daemon
        .metrics()
        .await
        .watch(WatchRequest { interval_ms: 10 })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let second = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let third = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(second.sampled_at_unix_ms > first.sampled_at_unix_ms);
    let gap = third.sampled_at_unix_ms - second.sampled_at_unix_ms;
    assert!(
        (700..=1600).contains(&gap),
        "snapshots {gap}ms apart, the sampler runs every 1s"
    );
}

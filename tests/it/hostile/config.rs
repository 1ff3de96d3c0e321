//! Config values past their bounds, pushed onto a running device: refused by the reload that
//! reads them, the running config kept, memory unmoved.

use std::time::Duration;

use super::harness::{Footprint, baseline};
use crate::support::TestDaemon;

/// A drop-in with 10,000 push labels (once accepted: RSS 5.9 -> 154 MiB, 9-11 MB pushes
/// against a 256 KiB buffer) is a rejected reload naming the key and the limit; the daemon
/// serves on, its RSS where it was.
#[tokio::test]
async fn ten_thousand_push_labels_are_a_rejected_reload() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let labels: String = (0..10_000)
        .map(|i| format!("l{i} = \"value-{i}\"\n"))
        .collect();
    daemon.rewrite_dropin(&format!(
        "[push]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n[push.labels]\n{labels}"
    ));
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| {
            l.contains("reload rejected") && l.contains("`push.labels`: 10000 keys; at most 16")
        })
        .await;
    daemon.echo_ok().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = Footprint::of(&daemon);
    eprintln!(
        "hostile: config_ten_thousand_labels: rss {} -> {} KiB",
        base.rss_kib, after.rss_kib
    );
    assert!(
        after.rss_kib < base.rss_kib + 8 * 1024,
        "RSS {} KiB from {} KiB",
        after.rss_kib,
        base.rss_kib
    );
}

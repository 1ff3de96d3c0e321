//! HTTP/2 abuse over mutual TLS, from `tests/hostile/h2_abuse.py`: floods of control
//! frames, header blocks that never end or inflate, and more streams than allowed.

use super::harness::{attack, attack_and_recover, goaway};
use crate::support::TestDaemon;

/// Rapid reset (CVE-2023-44487): HEADERS and RST_STREAM at once, 10 000 times over up to 20
/// connections. h2 allows 20 streams reset before the server accepts them, then sends
/// GOAWAY ENHANCE_YOUR_CALM "too_many_resets" on each connection. Paced (each 10 HEADERS
/// accepted before their RSTs arrive, 5 000 streams), which h2 does not count, the frame
/// limits end every connection the same way after at most ~300 streams; the daemon serves
/// throughout.
#[tokio::test]
async fn rapid_reset() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(
        &daemon,
        "rapid_reset",
        &["--count", "10000", "--connections", "20", "--seconds", "15"],
    )
    .await;
    assert_eq!(report["outcome"], "goaway ENHANCE_YOUR_CALM", "{report}");
    for phase in report["phases"].as_array().unwrap() {
        assert_eq!(goaway(phase), ("ENHANCE_YOUR_CALM", "too_many_resets"));
        // At most 20 resets (plus the streams in the read that crossed the line) were let in.
        assert!(
            phase["goaway"]["last_stream_id"].as_u64().unwrap() <= 2 * 25 + 1,
            "{phase}"
        );
    }
    let (report, _, _) = attack_and_recover(
        &daemon,
        "rapid_reset",
        &[
            "--count",
            "5000",
            "--batch",
            "10",
            "--pace-ms",
            "1",
            "--connections",
            "20",
            "--seconds",
            "15",
        ],
    )
    .await;
    // Accepted before their resets, these streams mostly pass h2's own limit; the frame
    // limits (a burst of 200 resets, 50 a second after) end every connection after ~220,
    // with the same GOAWAY as h2's (which still ends one now and then, on a loaded machine).
    let phases = report["phases"].as_array().unwrap();
    assert!(phases.len() >= 10, "{report}");
    for phase in phases {
        assert_eq!(
            goaway(phase),
            ("ENHANCE_YOUR_CALM", "too_many_resets"),
            "{report}"
        );
        assert!(
            phase["goaway"]["last_stream_id"].as_u64().unwrap() <= 2 * 300 + 1,
            "{phase}"
        );
    }
    eprintln!(
        "hostile: rapid_reset: paced: {} connections ended by the frame limits",
        calm_goaways(&daemon, "reset").await
    );
}

/// A PING flood (CVE-2019-9512): 20 000 PINGs, the replies not read until the end. Past
/// the frame limits' burst of 50 (10 a second after), the connection gets GOAWAY
/// ENHANCE_YOUR_CALM "too_many_pings" and is closed; it is counted in the metrics.
#[tokio::test]
async fn ping_flood() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(&daemon, "ping_flood", &["--count", "20000"]).await;
    assert_eq!(
        goaway(&report),
        ("ENHANCE_YOUR_CALM", "too_many_pings"),
        "{report}"
    );
    assert!(report["pongs"].as_u64().unwrap() <= 50, "{report}");
    assert_eq!(calm_goaways(&daemon, "ping").await, 1);
    daemon
        .wait_for_log(|l| l.contains("HTTP/2 flood") && l.contains("\"flood\":\"ping\""))
        .await;
}

/// A SETTINGS flood (CVE-2019-9515): 5 000 SETTINGS frames of 100 entries each, changing
/// the initial window of 16 open streams, ACKs not read until the end. Past a burst of 50
/// the connection gets GOAWAY ENHANCE_YOUR_CALM "too_many_settings".
#[tokio::test]
async fn settings_flood() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(&daemon, "settings_flood", &["--count", "5000"]).await;
    assert_eq!(
        goaway(&report),
        ("ENHANCE_YOUR_CALM", "too_many_settings"),
        "{report}"
    );
    assert_eq!(calm_goaways(&daemon, "settings").await, 1);
}

/// How many GOAWAY ENHANCE_YOUR_CALM the daemon's metrics count for `cause`.
async fn calm_goaways(daemon: &TestDaemon, cause: &str) -> u64 {
    let server = daemon.snapshot().await.server.expect("transport counters");
    server
        .calm_goaways
        .iter()
        .find(|c| c.reason == cause)
        .map_or(0, |c| c.count)
}

/// A CONTINUATION flood (CVE-2024-27316 and kin): a header block that never ends. h2 allows
/// 5 CONTINUATION frames for a 16 KiB header list, then sends GOAWAY ENHANCE_YOUR_CALM.
#[tokio::test]
async fn continuation_flood() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) =
        attack_and_recover(&daemon, "continuation_flood", &["--count", "10000"]).await;
    assert_eq!(
        goaway(&report),
        ("ENHANCE_YOUR_CALM", "too_many_continuations"),
        "{report}"
    );
}

/// A 1 MiB header list (the limit is 16 KiB) in 16 KiB frames: h2 stops buffering once the
/// block passes the limit and sends GOAWAY COMPRESSION_ERROR; a 20 KiB list (just over) is
/// answered with HTTP 431 and the connection stays up.
#[tokio::test]
async fn huge_headers() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(&daemon, "huge_headers", &["--count", "1024"]).await;
    assert_eq!(goaway(&report).0, "COMPRESSION_ERROR", "{report}");
    let report = attack(&daemon, "huge_headers", &["--count", "20"]).await;
    assert!(report["goaway"].is_null(), "{report}");
    assert_eq!(report["statuses"]["431"], 1, "{report}");
}

/// An HPACK bomb (CVE-2016-6581): 8 KiB on the wire that decode to 16 MiB of headers by
/// repeating a dynamic-table index. h2 sends GOAWAY ENHANCE_YOUR_CALM.
#[tokio::test]
async fn hpack_bomb() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(&daemon, "hpack_bomb", &["--count", "4000"]).await;
    assert_eq!(
        goaway(&report),
        ("ENHANCE_YOUR_CALM", "header_list_way_too_large"),
        "{report}"
    );
}

/// 2 000 streams opened and never finished, above max_concurrent_streams (128): 128 are
/// served (their handlers wait for a body), the others get REFUSED_STREAM, and after 1 024
/// refusals h2 sends GOAWAY ENHANCE_YOUR_CALM. 128 streams held for 2 s do not starve a
/// well-behaved client on another connection.
#[tokio::test]
async fn too_many_streams() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) =
        attack_and_recover(&daemon, "too_many_streams", &["--count", "2000"]).await;
    assert_eq!(
        goaway(&report),
        ("ENHANCE_YOUR_CALM", "too_many_internal_resets"),
        "{report}"
    );
    assert_eq!(report["rst_codes"]["REFUSED_STREAM"], 1024, "{report}");
    assert_eq!(
        report["goaway"]["last_stream_id"], 255,
        "128 streams let in"
    );

    let (report, _, _) = attack_and_recover(
        &daemon,
        "too_many_streams",
        &["--count", "128", "--hold", "2"],
    )
    .await;
    assert_eq!(report["outcome"], "open", "{report}");
}

/// WINDOW_UPDATE abuse: 100 streams whose send window overflows past 2^31-1 get RST_STREAM
/// FLOW_CONTROL_ERROR; a zero increment on a stream gets GOAWAY PROTOCOL_ERROR (h2 treats
/// it as a connection error); the connection window overflowing gets GOAWAY
/// FLOW_CONTROL_ERROR; a zero increment on the connection gets GOAWAY PROTOCOL_ERROR.
#[tokio::test]
async fn window_update_abuse() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) =
        attack_and_recover(&daemon, "window_update_abuse", &["--count", "100"]).await;
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(
        phases[0]["rst_codes"]["FLOW_CONTROL_ERROR"], 100,
        "{report}"
    );
    assert_eq!(goaway(&phases[1]).0, "PROTOCOL_ERROR", "{report}");
    assert_eq!(goaway(&phases[2]).0, "FLOW_CONTROL_ERROR", "{report}");
    assert_eq!(goaway(&phases[3]).0, "PROTOCOL_ERROR", "{report}");
}

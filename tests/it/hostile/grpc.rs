//! gRPC-level abuse through the raw h2 client (`support/raw.rs`): lying length prefixes and
//! compressed flags, malformed protobuf, oversized messages and deadlines at the edges.

use std::time::{Duration, Instant};

use bytes::Bytes;
use vitals::proto::echo::EchoRequest;

use super::harness::{assert_recovered, assert_serves_on, baseline, raw_status};
use crate::support::{TestDaemon, raw};

/// A message whose length prefix says 100 bytes but whose body has 10 before END_STREAM
/// gets a clean status: INTERNAL "Unexpected EOF decoding stream." (tonic's answer).
#[tokio::test]
async fn truncated_message() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let mut conn = daemon.raw_connect().await;
    let (code, message) = raw_status(&mut conn, &[], raw::frame_raw(false, 100, &[0x0a; 10])).await;
    eprintln!("hostile: truncated_message: grpc-status {code} {message:?}");
    assert_eq!(code, "13", "{message}");
    assert!(message.contains("Unexpected EOF"), "{message}");
    // A prefix cut short (3 of its 5 bytes) is the same.
    let (code, _) = raw_status(&mut conn, &[], Bytes::from_static(&[0, 0, 0])).await;
    assert_eq!(code, "13");
    drop(conn);
    assert_recovered(&daemon, "truncated_message", base).await;
}

/// Malformed protobuf (a bad wire type, a length past the end, invalid UTF-8 in a string,
/// a varint of 11 bytes) gets INTERNAL with prost's reason; the connection serves on.
#[tokio::test]
async fn malformed_protobuf() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let mut conn = daemon.raw_connect().await;
    let cases: [(&str, &[u8]); 4] = [
        ("wire type 7", &[0x0f, 0x00]),
        ("length past the end", &[0x0a, 0xff, 0xff, 0x03, b'a']),
        ("invalid UTF-8", &[0x0a, 0x02, 0xff, 0xfe]),
        (
            "11-byte varint",
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ),
    ];
    for (what, body) in cases {
        let frame = raw::frame_raw(false, body.len() as u32, body);
        let (code, message) = raw_status(&mut conn, &[], frame).await;
        eprintln!("hostile: malformed_protobuf: {what}: grpc-status {code} {message:?}");
        assert_eq!(code, "13", "{what}: {message}");
    }
    assert_serves_on(&mut conn).await;
    drop(conn);
    assert_recovered(&daemon, "malformed_protobuf", base).await;
}

/// A 5 MiB message (the limit is 4 MiB) is RESOURCE_EXHAUSTED, sent in full or only
/// announced by its length prefix.
#[tokio::test]
async fn oversized_message() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let mut conn = daemon.raw_connect().await;
    let big = 5 << 20;
    let (code, message) = raw_status(&mut conn, &[], raw::frame_raw(false, big, &[0; 16])).await;
    eprintln!("hostile: oversized_message: announced: grpc-status {code} {message:?}");
    assert_eq!(code, "8", "{message}");
    let full = raw::frame_raw(false, big, &vec![0; big as usize]);
    let (code, message) = raw_status(&mut conn, &[], full).await;
    assert_eq!(code, "8", "{message}");
    drop(conn);
    assert_recovered(&daemon, "oversized_message", base).await;
}

/// A compressed flag without grpc-encoding is INTERNAL; an encoding the server does not
/// know is UNIMPLEMENTED; the connection serves on.
#[tokio::test]
async fn compression_lies() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let mut conn = daemon.raw_connect().await;
    let (code, message) = raw_status(&mut conn, &[], raw::frame_raw(true, 4, b"junk")).await;
    eprintln!("hostile: compression_lies: flag without encoding: grpc-status {code} {message:?}");
    assert_eq!(code, "13", "{message}");
    let (code, message) = raw_status(
        &mut conn,
        &[("grpc-encoding", "br")],
        raw::frame_raw(true, 4, b"junk"),
    )
    .await;
    eprintln!("hostile: compression_lies: unknown encoding: grpc-status {code} {message:?}");
    assert_eq!(code, "12", "{message}");
    let (code, message) = raw_status(
        &mut conn,
        &[("grpc-encoding", "gzip")],
        raw::frame_raw(true, 8, b"not gzip"),
    )
    .await;
    eprintln!("hostile: compression_lies: corrupt gzip: grpc-status {code} {message:?}");
    assert_eq!(code, "13", "{message}");
    assert_serves_on(&mut conn).await;
    drop(conn);
    assert_recovered(&daemon, "compression_lies", base).await;
}

/// `grpc-timeout: 0m` (a deadline already passed) is DEADLINE_EXCEEDED, 50 times of 50,
/// for a call that would finish at once as for one with a 100 ms delay.
///
/// The first is the one that matters: under `tokio::time::timeout(0, ..)`, which polls the
/// handler once before looking at the clock, a handler ready on its first poll would answer
/// OK past its deadline (it did, until the call layer refused a zero deadline up front).
#[tokio::test]
async fn zero_deadline() {
    let daemon = TestDaemon::start("").await;
    let mut conn = daemon.raw_connect().await;
    let mut failures = Vec::new();
    for delay_ms in [0, 100] {
        let mut codes = std::collections::BTreeMap::new();
        let request = raw::frame(&EchoRequest {
            delay_ms,
            ..Default::default()
        });
        for _ in 0..50 {
            let (code, _) = raw_status(&mut conn, &[("grpc-timeout", "0m")], request.clone()).await;
            *codes.entry(code).or_insert(0) += 1;
        }
        eprintln!("hostile: zero_deadline: delay {delay_ms} ms: grpc-status counts {codes:?}");
        if codes.get("4") != Some(&50) {
            failures.push(format!("delay {delay_ms} ms: {codes:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "grpc-timeout 0m must be DEADLINE_EXCEEDED (status 4) every time: {failures:?}"
    );
}

/// An echo delay beyond `server.max_deadline` (1 s here) ends at the cap with
/// DEADLINE_EXCEEDED, whether the client asked for no deadline or a longer one.
#[tokio::test]
async fn delay_beyond_deadline_cap() {
    let daemon = TestDaemon::start("[server]\nmax_deadline = \"1s\"\n").await;
    let mut conn = daemon.raw_connect().await;
    let slow = raw::frame(&EchoRequest {
        delay_ms: 3000,
        ..Default::default()
    });
    for headers in [&[][..], &[("grpc-timeout", "10S")][..]] {
        let started = Instant::now();
        let (code, message) = raw_status(&mut conn, headers, slow.clone()).await;
        let took = started.elapsed();
        eprintln!(
            "hostile: delay_beyond_deadline_cap: {headers:?}: grpc-status {code} after {} ms",
            took.as_millis()
        );
        assert_eq!(code, "4", "{message}");
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }
}

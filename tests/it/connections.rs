use std::time::{Duration, Instant};

use tokio::{io::AsyncReadExt, net::TcpStream};
use vitals::proto::echo::EchoRequest;

use crate::support::{TestDaemon, raw, spawn_echo};

fn delayed(ms: u32) -> bytes::Bytes {
    raw::frame(&EchoRequest {
        echo_message: "in flight".into(),
        delay_ms: ms,
        ..Default::default()
    })
}

const ECHO: &str = "/vitals.echo.v1.Echo/Echo";

/// An idle connection gets GOAWAY after max idle, counted from the end of its last call:
/// a call longer than the idle time is not cut.
#[tokio::test]
async fn idle_connection_gets_goaway_after_last_call() {
    let daemon = TestDaemon::start("[server]\nmax_connection_idle = \"1s\"\n").await;
    let mut conn = daemon.raw_connect().await;
    let reply = raw::call(&mut conn.send, ECHO, delayed(1500))
        .await
        .unwrap();
    assert_eq!(
        reply.grpc_status.as_deref(),
        Some("0"),
        "a call longer than max idle completes"
    );
    let call_ended = Instant::now();
    let (closed_at, result) = tokio::time::timeout(Duration::from_secs(5), conn.closed)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "graceful GOAWAY, not an error: {result:?}");
    let idle = closed_at - call_ended;
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_millis(2500),
        "closed {idle:?} after the last call"
    );
}

/// An aged connection gets GOAWAY at max age, its in-flight call still completes, and
/// new calls on it are refused.
#[tokio::test]
async fn aged_connection_drains_in_flight_call() {
    let daemon = TestDaemon::start(
        "[server]\nmax_connection_age = \"1s\"\nmax_connection_age_grace = \"10s\"\n",
    )
    .await;
    let mut conn = daemon.raw_connect().await;
    let started = Instant::now();
    let mut send = conn.send.clone();
    let in_flight = tokio::spawn(async move { raw::call(&mut send, ECHO, delayed(2500)).await });
    tokio::time::sleep(Duration::from_millis(1600)).await; // past 1s + 10% jitter
    let late = raw::call(&mut conn.send, ECHO, delayed(0)).await;
    assert!(
        late.is_err(),
        "a new call after GOAWAY must be refused: {late:?}"
    );
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.grpc_status.as_deref(), Some("0"));
    assert!(started.elapsed() >= Duration::from_millis(2500));
    let (_, result) = tokio::time::timeout(Duration::from_secs(5), conn.closed)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

/// After the age grace period the connection is closed even with a call in flight.
#[tokio::test]
async fn age_grace_bounds_the_drain() {
    let daemon = TestDaemon::start(
        "[server]\nmax_connection_age = \"500ms\"\nmax_connection_age_grace = \"500ms\"\n",
    )
    .await;
    let mut conn = daemon.raw_connect().await;
    let started = Instant::now();
    let result = raw::call(&mut conn.send, ECHO, delayed(10_000)).await;
    assert!(
        result.is_err() || result.as_ref().unwrap().grpc_status.as_deref() != Some("0"),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
}

/// SIGTERM lets every in-flight call finish OK, then the daemon exits 0.
#[tokio::test]
async fn sigterm_drains_in_flight_calls() {
    drains_on_sigterm("[server]\nworker_threads = 2\n", "multi_thread").await;
}

/// The same on one worker, where the runtime is tokio's current-thread scheduler (what a
/// one-core device and the benchmarks run): the delayed calls, the health checks that wait
/// for them and the drain all share the one thread.
#[tokio::test]
async fn sigterm_drains_on_one_worker() {
    drains_on_sigterm("[server]\nworker_threads = 1\n", "current_thread").await;
}

async fn drains_on_sigterm(dropin: &str, runtime: &str) {
    let mut daemon = TestDaemon::start(dropin).await;
    daemon
        .wait_for_log(|l| l.contains(r#""message":"serving""#))
        .await;
    let serving = daemon
        .log_json()
        .into_iter()
        .find(|l| l["fields"]["message"] == "serving")
        .expect("a serving line");
    assert_eq!(serving["fields"]["runtime"], runtime, "{serving}");
    let mut calls = Vec::new();
    for i in 0..4 {
        let echo = daemon.echo().await; // a connection each
        for j in 0..25 {
            let sent = format!("{i}-{j}");
            calls.push((sent.clone(), spawn_echo(&echo, &sent, 1000)));
        }
    }
    daemon.wait_in_flight(ECHO, 100).await;
    daemon.signal("TERM");
    let mut ok = 0;
    for (sent, call) in calls {
        let message = call.await.unwrap().expect("an in-flight call completes");
        assert_eq!(message, sent, "each call gets its own message back");
        ok += 1;
    }
    assert_eq!(ok, 100);
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0));
    assert!(daemon.logs().iter().any(|l| l.contains("stopped")));
}

/// Connections above the cap are closed at once; those inside it are served.
#[tokio::test]
async fn connection_cap_refuses_extra_connections() {
    let daemon = TestDaemon::start("[server]\nmax_connections = 2\n").await;
    let a = daemon.echo().await;
    let b = daemon.echo().await;
    let mut extra = TcpStream::connect(daemon.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the extra connection is closed: {read:?}"
    );
    for mut client in [a, b] {
        client.echo(EchoRequest::default()).await.unwrap();
    }
}

/// A connection that never starts its TLS handshake is closed at the handshake timeout.
#[tokio::test]
async fn silent_connection_closed_at_handshake_timeout() {
    let daemon = TestDaemon::start("[server]\nhandshake_timeout = \"500ms\"\n").await;
    let mut silent = TcpStream::connect(daemon.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    daemon.echo_ok().await;
}

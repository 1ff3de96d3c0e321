use std::time::Duration;

use tonic::Code;
use vitals::{
    client::Dial,
    pki::{Leaf, Usage},
    proto::{
        echo::{EchoRequest, echo_client::EchoClient},
        health::{HealthCheckRequest, health_check_response::ServingStatus},
    },
};

use crate::support::{TestDaemon, eventually};

/// Generous: a reload re-reads files on a blocking thread, and the suite runs many daemons.
const WAIT: Duration = Duration::from_secs(15);

/// A reloaded limit applies to new connections without a restart.
#[tokio::test]
async fn reload_applies_new_limits() {
    reloads_limits("").await;
}

/// The same on one worker (the current-thread runtime), where the reload's file reads run
/// on a blocking thread beside the one that serves.
#[tokio::test]
async fn reload_on_one_worker() {
    reloads_limits("worker_threads = 1\n").await;
}

async fn reloads_limits(server: &str) {
    let daemon =
        TestDaemon::start(&format!("[server]\n{server}max_message_size = \"64KiB\"\n")).await;
    let big = EchoRequest {
        response_size: 100_000,
        ..Default::default()
    };
    let err = daemon.echo().await.echo(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    daemon.rewrite_dropin(&format!("[server]\n{server}max_message_size = \"1MiB\"\n"));
    daemon.signal("HUP");
    eventually(WAIT, || {
        let big = big.clone();
        let dial = daemon.dial();
        async move {
            let channel = dial.connect().await.map_err(|e| e.to_string())?;
            EchoClient::new(channel)
                .echo(big)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    // The line follows the swap that the call above saw: wait for it to be read.
    daemon
        .wait_for_log(|l| l.contains("reloaded the config"))
        .await;
}

/// A reload that lowers a health threshold flips the overall status back to SERVING.
#[tokio::test]
async fn reload_applies_health_thresholds() {
    let daemon = TestDaemon::start("[health]\nmin_disk_free_percent = 99.9\n").await;
    let health = daemon.health().await;
    let overall = || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest::default())
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    eventually(WAIT, || async {
        (overall().await == ServingStatus::NotServing)
            .then_some(())
            .ok_or("still serving".to_string())
    })
    .await;
    daemon.rewrite_dropin("[health]\nmin_disk_free_percent = 0.0\n");
    daemon.signal("HUP");
    eventually(WAIT, || async {
        (overall().await == ServingStatus::Serving)
            .then_some(())
            .ok_or("not serving".to_string())
    })
    .await;
    // The flip holds: the connection that saw NOT_SERVING, and a new one, both see SERVING.
    for (which, mut client) in [("the old", health), ("a new", daemon.health().await)] {
        let status = client
            .check(HealthCheckRequest::default())
            .await
            .unwrap_or_else(|e| panic!("{which} connection: {e}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{which} connection");
    }
}

/// An invalid config is rejected whole: the daemon keeps serving on the old one and says
/// which file and key are wrong.
#[tokio::test]
async fn invalid_config_is_rejected_on_reload() {
    let daemon = TestDaemon::start("[server]\nmax_message_size = \"64KiB\"\n").await;
    daemon.rewrite_dropin("[server]\nmax_message_size = \"1MiB\"\nmax_connections = -3\n");
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| {
            l.contains("reload rejected")
                && l.contains("50-test.toml")
                && l.contains("server.max_connections")
        })
        .await;
    // The valid part of the rejected file was not applied either.
    let big = EchoRequest {
        response_size: 100_000,
        ..Default::default()
    };
    let err = daemon.echo().await.echo(big).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
}

/// A garbage certificate is rejected on reload and the old one keeps serving.
#[tokio::test]
async fn garbage_certificate_is_rejected_on_reload() {
    let daemon = TestDaemon::start("").await;
    std::fs::write(
        daemon.pki.path("server.crt"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reload rejected") && l.contains("server.crt"))
        .await;
    daemon.echo_ok().await;
}

/// A reload swaps the server certificate for new connections while an open connection
/// (with a call in flight) carries on.
#[tokio::test]
async fn reload_swaps_certificate_without_dropping_connections() {
    let daemon = TestDaemon::start("").await;
    let mut old = daemon.echo().await;
    let mut in_flight = old.clone();
    let call = tokio::spawn(async move {
        in_flight
            .echo(EchoRequest {
                delay_ms: 1500,
                ..Default::default()
            })
            .await
    });
    daemon.wait_in_flight("/vitals.echo.v1.Echo/Echo", 1).await;
    // The new certificate names only "reloaded.test".
    daemon.pki.issue(
        "server",
        &Leaf::new("reloaded", &["reloaded.test"], Usage::Server, 30),
    );
    daemon.signal("HUP");
    let named = |name: &str| {
        let mut dial = daemon.dial();
        dial.server_name = Some(name.to_string());
        dial
    };
    eventually(WAIT, || {
        let dial: Dial = named("reloaded.test");
        async move { dial.connect().await.map(|_| ()).map_err(|e| e.to_string()) }
    })
    .await;
    let stale = named("localhost").connect().await;
    let stale_call = match stale {
        Ok(channel) => EchoClient::new(channel)
            .echo(EchoRequest::default())
            .await
            .map(|_| ()),
        Err(_) => Err(tonic::Status::unavailable("refused")),
    };
    assert!(
        stale_call.is_err(),
        "new connections present the new certificate"
    );
    assert!(
        call.await.unwrap().is_ok(),
        "the in-flight call on the old connection completes"
    );
    old.echo(EchoRequest::default())
        .await
        .expect("the old connection still serves");
}

/// A SIGHUP that arrives the moment the daemon says it serves reloads it; it must not
/// meet SIGHUP's default action (termination) because handlers were not installed yet.
#[tokio::test]
async fn sighup_right_after_start_reloads() {
    for _ in 0..5 {
        let mut daemon = TestDaemon::start("").await;
        daemon.signal("HUP");
        daemon
            .wait_for_log(|l| l.contains("reloaded the config"))
            .await;
        daemon.echo_ok().await;
        daemon.signal("TERM");
        assert!(daemon.wait_exit(WAIT).await.success());
    }
}

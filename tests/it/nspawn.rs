//! vitalsd under a real systemd: each test boots a minimal Debian container with systemd as
//! PID 1 (`systemd-nspawn --register=no --keep-unit`, a throwaway overlay over the root that
//! scripts/nspawn-rootfs.sh builds), with systemd/vitalsd.service in /run/systemd/system,
//! the built daemon at /usr/local/bin/vitalsd and a test PKI in /etc/vitalsd. The container
//! shares the host's network, so the test talks to the daemon over mutual TLS as a prober
//! would. Needs root; a missing tool or rootfs fails the test rather than skipping it.

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use tonic::Code;
use vitals::proto::{
    echo::{EchoRequest, echo_client::EchoClient},
    health::health_check_response::ServingStatus,
    metrics::{SnapshotRequest, metrics_client::MetricsClient},
};

use crate::support::{
    eventually,
    nspawn::{Container, WAIT, unit},
    spawn_echo, wait_in_flight,
};

/// The unit turns active only once the daemon has sent READY=1: while the daemon is held
/// before it (a secret it needs is in a Vault that is not up yet) the unit is activating and
/// nothing answers; once the store answers, the unit is active and a health check made at
/// that moment gets SERVING. A blocking `systemctl start` returns only then too.
#[tokio::test]
async fn unit_is_active_only_after_ready() {
    let store_port = crate::support::free_port();
    let dropin = format!(
        "[secrets]\nstartup_timeout = \"60s\"\n[[secrets.sources]]\nkind = \"credentials\"\n[[secrets.sources]]\nkind = \"vault\"\naddr = \"https://127.0.0.1:{store_port}\"\nca_cert = \"/etc/vitalsd/tls/ca.crt\"\npath = \"devices/gw\"\ntoken = \"secret:vault-token\"\nfields = {{ echo-token = \"k\" }}\n[[auth.bearer]]\nmethods = [\"vitals.echo.v1.Echo/*\"]\nkind = \"opaque\"\ntokens = [\"secret:echo-token\"]\n"
    );
    let unit = unit(&[(
        "LoadCredential=server.key:",
        "SetCredential=vault-token:s.not-a-real-token\nLoadCredential=server.key:",
    )]);
    let container = Container::boot(&unit, &dropin).await;
    container
        .systemctl(&["start", "--no-block", "vitalsd.service"])
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let unit = container.show().await;
        if unit["MainPID"] != "0" {
            let state = (unit["ActiveState"].as_str(), unit["SubState"].as_str());
            assert_eq!(
                state,
                ("activating", "start"),
                "{}",
                container.journal().await
            );
            break;
        }
        assert!(Instant::now() < deadline, "no main process: {unit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The daemon runs but cannot be ready: nothing listens, and systemd keeps waiting.
    // (Proving an absence takes a wait; half a second is plenty for a 7 ms startup.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = container.health().await;
    assert!(refused.is_err(), "answered before READY: {refused:?}");
    assert_eq!(container.show().await["ActiveState"], "activating");

    let _store = crate::support::fake::answering_server_on(
        store_port,
        crate::support::fake::kv_answer("k", "echo-token-0123456789"),
        Some(container.pki()),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let unit = container.show().await;
        if unit["ActiveState"] == "active" {
            assert_eq!(container.health().await, Ok(ServingStatus::Serving));
            assert_eq!(unit["SubState"], "running");
            break;
        }
        assert_eq!(
            unit["ActiveState"],
            "activating",
            "{}",
            container.journal().await
        );
        assert!(Instant::now() < deadline, "never active: {unit:?}");
    }

    // Stop and a blocking start: it returns after READY.
    container.systemctl(&["stop", "vitalsd.service"]).await;
    container.systemctl(&["start", "vitalsd.service"]).await;
    assert_eq!(container.health().await, Ok(ServingStatus::Serving));
    assert_eq!(container.show().await["ActiveState"], "active");
}

/// DynamicUser and LoadCredential: the daemon runs as a transient user (not root) and serves
/// with a TLS key that this user cannot read at its path (root's, 0600) but gets as a
/// credential only it can read. The unit's `GLIBC_TUNABLES` reach it, so it runs without
/// executing itself again.
#[tokio::test]
async fn dynamic_user_gets_the_key_as_a_credential() {
    let container = Container::boot(&unit(&[]), "").await;
    container.systemctl(&["start", "vitalsd.service"]).await;
    let pid = container.main_pid().await;

    // The daemon's PID as its own (the container's) namespace numbers it.
    let status = container
        .exec(&["cat", &format!("/proc/{pid}/status")])
        .await;
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let ids = |key: &str| -> Vec<u32> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {status}"));
        line.split_whitespace()
            .skip(1)
            .map(|id| id.parse().unwrap())
            .collect()
    };
    let (uids, gids) = (ids("Uid:"), ids("Gid:"));
    let (uid, gid) = (uids[0], gids[0]);
    // systemd's dynamic users are 61184-65519; real, effective, saved and fs ids all agree.
    assert!((61184..=65519).contains(&uid), "uid {uid}");
    assert!(uids.iter().all(|&id| id == uid), "{uids:?}");
    assert!(gids.iter().all(|&id| id == gid), "{gids:?}");

    // The unit sets glibc's tunables, so the daemon did not execute itself again for them.
    let environ = container
        .exec(&["cat", &format!("/proc/{pid}/environ")])
        .await;
    let var = |key: &str| crate::support::environ_var(&environ.stdout, key);
    assert_eq!(
        var("GLIBC_TUNABLES"),
        Some("glibc.malloc.mmap_threshold=262144:glibc.malloc.tcache_count=1".into()),
        "{}",
        String::from_utf8_lossy(&environ.stdout)
    );
    assert!(
        var("VITALS_MALLOC_REEXECUTED").is_none(),
        "executed again under the unit"
    );

    let host_key = std::fs::metadata(container.etc("tls/server.key")).unwrap();
    assert_eq!(host_key.permissions().mode() & 0o777, 0o600);
    let credential = "/run/credentials/vitalsd.service/server.key";
    let stat = container.exec(&["stat", "-c", "%u %a", credential]).await;
    assert_eq!(
        String::from_utf8_lossy(&stat.stdout).trim(),
        format!("{uid} 400"),
        "{}",
        String::from_utf8_lossy(&stat.stderr)
    );
    let direct = container
        .exec(&[
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "cat",
            "/etc/vitalsd/tls/server.key",
        ])
        .await;
    assert!(
        !direct.status.success()
            && String::from_utf8_lossy(&direct.stderr).contains("Permission denied"),
        "the dynamic user could read the key directly"
    );

    // The server's TLS key is the credential: the handshake and a call succeed.
    let reply = container
        .echo()
        .await
        .echo(EchoRequest {
            echo_message: "credential".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().echo_message, "credential");
}

/// A daemon that stops answering the watchdog (SIGSTOP) is killed and restarted: a new main
/// process serves again. The test's unit has WatchdogSec=2s instead of 20s.
#[tokio::test]
async fn watchdog_restarts_a_stopped_daemon() {
    let container = Container::boot(&unit(&[("WatchdogSec=20s", "WatchdogSec=2s")]), "").await;
    container.systemctl(&["start", "vitalsd.service"]).await;
    let first = container.main_pid().await;

    let stopped = Instant::now();
    container
        .systemctl(&[
            "kill",
            "--kill-whom=main",
            "--signal=SIGSTOP",
            "vitalsd.service",
        ])
        .await;
    let second = container.wait_active(first).await;
    // At least 1 s to the watchdog (pinged every second), then RestartSec=2s.
    let elapsed = stopped.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3),
        "restarted after {elapsed:?}"
    );
    assert_ne!(second, first);
    assert_eq!(container.show().await["NRestarts"], "1");
    let journal = container.journal().await;
    assert!(
        journal.contains("Failed with result 'watchdog'"),
        "{journal}"
    );
    assert_eq!(container.health().await, Ok(ServingStatus::Serving));
}

/// `systemctl reload` applies a changed drop-in in the running process: a response larger
/// than the old message size limit is refused before and served after.
#[tokio::test]
async fn reload_applies_a_changed_dropin() {
    let container = Container::boot(&unit(&[]), "[server]\nmax_message_size = \"64KiB\"\n").await;
    container.systemctl(&["start", "vitalsd.service"]).await;
    let pid = container.main_pid().await;
    let big = EchoRequest {
        response_size: 100_000,
        ..Default::default()
    };
    let err = container.echo().await.echo(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");

    std::fs::write(
        container.etc("vitalsd.d/50-test.toml"),
        "[server]\nmax_message_size = \"1MiB\"\n",
    )
    .unwrap();
    container.systemctl(&["reload", "vitalsd.service"]).await;
    eventually(WAIT, || {
        let dial = container.dial();
        let big = big.clone();
        async move {
            let channel = dial.connect().await.map_err(|e| format!("{e:#}"))?;
            EchoClient::new(channel)
                .echo(big)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let unit = container.show().await;
    assert_eq!(unit["ActiveState"], "active");
    assert_eq!(unit["MainPID"], pid.to_string(), "reloaded, not restarted");
    assert_eq!(unit["NRestarts"], "0");
}

/// `systemctl stop` drains: calls in flight when it starts all complete OK, and the unit
/// ends inactive (not failed) with the daemon's exit status 0. (A stopped unit is unloaded,
/// which resets its ExecMain* properties: a drop-in's ExecStopPost= logs them instead.)
#[tokio::test]
async fn stop_drains_in_flight_calls() {
    const CALLS: usize = 4;
    let container = Container::boot(&unit(&[]), "").await;
    container
        .add_unit_dropin(
            "exit.conf",
            "[Service]\nExecStopPost=/bin/sh -c 'echo \"main process: $EXIT_CODE $EXIT_STATUS\"'\n",
        )
        .await;
    container.systemctl(&["start", "vitalsd.service"]).await;
    // Two connections, two calls on each.
    let clients = [container.echo().await, container.echo().await];
    let calls: Vec<_> = (0..CALLS)
        .map(|i| spawn_echo(&clients[i % 2], &format!("call {i}"), 1500))
        .collect();
    let metrics = MetricsClient::new(container.dial().connect().await.unwrap());
    wait_in_flight(&metrics, "/vitals.echo.v1.Echo/Echo", CALLS as u64, WAIT).await;

    let stopping = Instant::now();
    container.systemctl(&["stop", "vitalsd.service"]).await;
    // Well inside drain_timeout (10s): the daemon exits once its calls are done.
    let elapsed = stopping.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "stopped after {elapsed:?}"
    );
    for (i, call) in calls.into_iter().enumerate() {
        let message = call.await.unwrap();
        let message = message.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(message, format!("call {i}"));
    }
    assert_eq!(container.show().await["ActiveState"], "inactive");
    let journal = container.journal().await;
    assert!(journal.contains("main process: exited 0"), "{journal}");
    assert!(container.health().await.is_err(), "still answering");
}

/// Under the unit's sandbox (DynamicUser, PrivateUsers, ProtectProc=invisible,
/// ProtectSystem=strict, ...) the metrics still describe the CPU, memory, filesystems,
/// network and the daemon itself.
#[tokio::test]
async fn metrics_are_complete_under_the_sandbox() {
    let container = Container::boot(&unit(&[]), "").await;
    container.systemctl(&["start", "vitalsd.service"]).await;
    let pid = container.main_pid().await;
    let s = MetricsClient::new(container.dial().connect().await.unwrap())
        .snapshot(SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let host = s.host.expect("host");
    assert!(
        !host.hostname.is_empty() && host.uptime_secs > 0,
        "{host:?}"
    );
    let cpu = s.cpu.expect("cpu");
    assert!(!cpu.cores.is_empty(), "{cpu:?}");
    let memory = s.memory.expect("memory");
    assert!(
        memory.total_bytes > 0 && memory.available_bytes > 0,
        "{memory:?}"
    );
    assert!(
        s.filesystems
            .iter()
            .any(|f| f.mount_point == "/" && f.total_bytes > 0),
        "{:?}",
        s.filesystems
    );
    assert!(
        s.networks.iter().any(|n| n.name == "lo"),
        "{:?}",
        s.networks
    );
    // The daemon sees itself as the container numbers it: its own PID namespace.
    let process = s.process.expect("process");
    assert_eq!(process.pid, pid);
    assert!(
        process.rss_bytes > 0 && process.open_fds > 0 && process.threads > 0,
        "{process:?}"
    );
}

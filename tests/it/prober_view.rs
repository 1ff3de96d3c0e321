//! What a prober sees at the moments health used to lie: right after start, during a stop,
//! and while a mount hangs.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_stream::StreamExt;
use tonic::Code;
use vitals::{
    client::Dial,
    proto::health::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    },
};

use crate::support::{NamespacedScript, TestDaemon, TestPki, free_port, require, write_config};

fn req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

/// One Check on a fresh plaintext connection; `None` when the daemon does not answer yet.
async fn check_once(addr: &str, service: &str) -> Option<ServingStatus> {
    let dial = Dial {
        connect_timeout: Duration::from_millis(200),
        ..Dial::plaintext(addr)
    };
    let channel = dial.connect().await.ok()?;
    let reply = HealthClient::new(channel).check(req(service)).await.ok()?;
    Some(reply.into_inner().status())
}

/// A device whose disk check fails is never SERVING, not even in the first moments after
/// exec: probes sent back to back from the start get NOT_SERVING (or no answer) for `""`
/// and the served services until well after READY, and SERVING for the liveness name.
#[tokio::test]
async fn sick_device_is_not_serving_from_the_first_answer() {
    let pki = Arc::new(TestPki::new());
    let port = free_port();
    let dir = write_config(
        &pki,
        &format!(
            "[health]\nplaintext_listen = [\"127.0.0.1:{port}\"]\nmin_disk_free_percent = 99.9\n"
        ),
    );
    let addr = format!("127.0.0.1:{port}");
    let mut child = crate::support::vitalsd_command()
        .arg("--config")
        .arg(dir.path().join("vitalsd.toml"))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (mut answers, mut first_answer) = (Vec::new(), None);
    while started.elapsed() < Duration::from_secs(3) {
        for service in ["", "vitals.echo.v1.Echo", "grpc.health.v1.Health"] {
            if let Some(status) = check_once(&addr, service).await {
                first_answer.get_or_insert(started.elapsed());
                answers.push((service, status));
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = first_answer.expect("the daemon answered within 3 s");
    eprintln!(
        "prober_view: {} answers, the first {} ms after exec",
        answers.len(),
        first.as_millis()
    );
    for (service, status) in &answers {
        let expected = match *service {
            "grpc.health.v1.Health" => ServingStatus::Serving,
            _ => ServingStatus::NotServing,
        };
        assert_eq!(*status, expected, "{service:?} answered {status:?}");
    }
    assert!(answers.len() >= 30, "only {} answers", answers.len());
}

/// SIGTERM opens a window of `server.shutdown_delay`: readiness answers NOT_SERVING on new
/// connections of both listeners, an open Watch is sent NOT_SERVING and stays open, the
/// liveness name stays SERVING; after it the Watch ends with UNAVAILABLE, the listeners
/// close and the daemon exits 0.
#[tokio::test]
async fn sigterm_gives_pollers_a_not_serving_window() {
    let mut daemon = TestDaemon::start(
        "[server]\nshutdown_delay = \"2s\"\n[health]\nplaintext_listen = [\"127.0.0.1:0\"]\n",
    )
    .await;
    let plain = daemon.health_addr.unwrap().to_string();
    let mut watch = daemon
        .health()
        .await
        .watch(req(""))
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap().status();
    assert_eq!(first, ServingStatus::Serving);

    daemon.signal("TERM");
    let termed = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(1), watch.next())
        .await
        .expect("the watch is told at once")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);

    // New connections, both listeners, inside the window.
    let mut tls = HealthClient::new(daemon.dial().connect().await.expect("still accepting"));
    for (service, expected) in [
        ("", ServingStatus::NotServing),
        ("vitals.echo.v1.Echo", ServingStatus::NotServing),
        ("grpc.health.v1.Health", ServingStatus::Serving),
    ] {
        let status = tls.check(req(service)).await.unwrap().into_inner().status();
        assert_eq!(status, expected, "mTLS {service:?}");
        assert_eq!(
            check_once(&plain, service).await,
            Some(expected),
            "plaintext {service:?}"
        );
    }
    assert!(
        termed.elapsed() < Duration::from_millis(1500),
        "the checks above took {:?}",
        termed.elapsed()
    );

    // The watch stays open through the window, then ends with UNAVAILABLE.
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch ends after the window");
    let window = termed.elapsed();
    match end {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("the watch ended with {other:?}"),
    }
    assert!(
        window >= Duration::from_millis(1900),
        "the watch ended {window:?} after SIGTERM, before the 2 s delay"
    );
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(
        check_once(&plain, "").await.is_none(),
        "still answering after exit"
    );
    eprintln!(
        "prober_view: NOT_SERVING window of {} ms before the GOAWAY",
        window.as_millis()
    );
}

/// Mounts a FUSE filesystem whose statfs hangs (tests/fuse/hang_fs.py) at `$3/hang`, starts
/// vitalsd on the config `$2` in the same private mount namespace, and prints its serving
/// line and pid; when vitalsd exits, releases and unmounts the filesystem.
const STUCK_MOUNT_SCRIPT: &str = r#"
set -eu
vitalsd=$1 config=$2 dir=$3
mkdir -p "$dir/hang"
python3 "$HANG_FS" "$dir/hang" "$dir/release" >"$dir/fuse.log" 2>&1 &
fuse=$!
for _ in $(seq 300); do grep -q mounted "$dir/fuse.log" && break; sleep 0.02; done
grep -q '^mounted' "$dir/fuse.log" || { echo "FUSE $(cat "$dir/fuse.log")"; exit 1; }
"$vitalsd" --config "$config" 2>"$dir/vitalsd.log" &
pid=$!
for _ in $(seq 300); do grep -q '"serving"' "$dir/vitalsd.log" && break; sleep 0.02; done
echo "SERVING $(grep -m1 '"serving"' "$dir/vitalsd.log")"
echo "PID $pid"
code=0; wait $pid || code=$?
touch "$dir/release"; kill $fuse; wait $fuse || true
echo "EXIT $code"
"#;

/// A hung FUSE mount under a watched path is reported stuck, and nothing else stops: health
/// answers at once with overall NOT_SERVING (the watched path cannot be checked), the
/// liveness name SERVING, the metrics report the mount stuck and every other filesystem with
/// its sizes, echo is served; once the mount answers again health is SERVING and the mount
/// has its sizes.
#[tokio::test]
async fn stuck_mount_is_reported_and_the_rest_keeps_serving() {
    require_fuse();
    let pki = Arc::new(TestPki::new());
    let port = free_port();
    let work = tempfile::tempdir().unwrap();
    let hang = work.path().join("hang");
    let dropin = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n\
         [health]\ndisk_paths = [\"/\", \"{}/data\"]\n\
         [metrics]\nsample_interval = \"1s\"\nfilesystem_timeout = \"200ms\"\n",
        hang.display()
    );
    let dir = write_config(&pki, &dropin);
    let script = NamespacedScript::spawn_with_env(
        STUCK_MOUNT_SCRIPT,
        dir.path(),
        &dir.path().join("vitalsd.toml"),
        work.path(),
        &[(
            "HANG_FS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuse/hang_fs.py"),
        )],
    );
    let next = |needle: &str| script.line_with(needle, Duration::from_secs(20));
    let serving = next("SERVING");
    assert!(serving.contains("\"serving\""), "{serving}");
    let pid = next("PID ").trim_start_matches("PID ").to_string();
    let dial = pki.dial(&format!("127.0.0.1:{port}"));
    let channel = dial
        .connect()
        .await
        .expect("connects while the mount hangs");
    let mut health = HealthClient::new(channel.clone());
    let hang_point = hang.display().to_string();

    crate::support::eventually(Duration::from_secs(5), || {
        let mut health = health.clone();
        async move {
            let asked = Instant::now();
            let status = health.check(req("")).await.map_err(|e| e.to_string())?;
            let took = asked.elapsed();
            assert!(took < Duration::from_millis(500), "Check took {took:?}");
            eprintln!(
                "prober_view: Check answered in {} us while the mount hangs",
                took.as_micros()
            );
            (status.into_inner().status() == ServingStatus::NotServing)
                .then_some(())
                .ok_or_else(|| "still SERVING".to_string())
        }
    })
    .await;
    let live = health.check(req("grpc.health.v1.Health")).await.unwrap();
    assert_eq!(live.into_inner().status(), ServingStatus::Serving);
    let mut metrics = vitals::proto::metrics::metrics_client::MetricsClient::new(channel.clone());
    let snapshot = metrics
        .snapshot(vitals::proto::metrics::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let stuck = snapshot
        .filesystems
        .iter()
        .find(|f| f.mount_point == hang_point)
        .unwrap_or_else(|| panic!("no {hang_point} in {:?}", snapshot.filesystems));
    assert!(stuck.stuck && stuck.total_bytes == 0, "{stuck:?}");
    let root = snapshot.filesystems.iter().find(|f| f.mount_point == "/");
    assert!(
        root.is_some_and(|r| r.total_bytes > 0 && !r.stuck),
        "{:?}",
        snapshot.filesystems
    );
    assert!(snapshot.memory.is_some_and(|m| m.total_bytes > 0));
    vitals::proto::echo::echo_client::EchoClient::new(channel.clone())
        .echo(vitals::proto::echo::EchoRequest {
            echo_message: "while stuck".into(),
            ..Default::default()
        })
        .await
        .expect("echo is served while the mount hangs");

    std::fs::write(work.path().join("release"), "").unwrap();
    crate::support::eventually(Duration::from_secs(10), || {
        let (mut health, mut metrics) = (health.clone(), metrics.clone());
        let hang_point = hang_point.clone();
        async move {
            let status = health.check(req("")).await.map_err(|e| e.to_string())?;
            let snapshot = metrics
                .snapshot(vitals::proto::metrics::SnapshotRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let mount = snapshot
                .filesystems
                .iter()
                .find(|f| f.mount_point == hang_point)
                .cloned();
            match (status.into_inner().status(), mount) {
                (ServingStatus::Serving, Some(m)) if !m.stuck && m.total_bytes == 1 << 30 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let exit = next("EXIT ");
    let (_, _) = script.finish().await;
    let log = std::fs::read_to_string(work.path().join("vitalsd.log")).unwrap_or_default();
    assert!(
        log.contains("did not answer statfs in time") && log.contains("answers statfs again"),
        "{log}"
    );
    assert_eq!(exit, "EXIT 0");
}

/// Checks that FUSE can be mounted here by hang_fs.py.
fn require_fuse() {
    require("python3", "python3");
    require("fusermount3", "fuse3");
    assert!(
        std::path::Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing"
    );
    let probe = std::process::Command::new("python3")
        .args(["-c", "import mfusepy"])
        .status()
        .unwrap();
    assert!(
        probe.success(),
        "the Python FUSE binding is missing: scripts/test.sh installs it (pip install mfusepy)"
    );
}

/// A FUSE mount that stays hung (its statfs never answers while the daemon lives) does not
/// keep the daemon from exiting: SIGTERM ends it within seconds and it exits 0, both when
/// a health.disk_paths entry is on the mount (read by a statfs worker process, which the
/// hung mount may keep instead; overall health NOT_SERVING meanwhile) and when none is
/// (FUSE types are left out by default, so the mount is never asked). It used to stay a
/// zombie, its sampler threads in D state, until the mount answered.
#[tokio::test]
async fn hung_fuse_mount_does_not_keep_the_daemon() {
    require_fuse();
    for watched in [true, false] {
        let pki = Arc::new(TestPki::new());
        let port = free_port();
        let work = tempfile::tempdir().unwrap();
        let hang = work.path().join("hang");
        let disk_paths = if watched {
            format!("[\"/\", \"{}/data\"]", hang.display())
        } else {
            "[\"/\"]".to_owned()
        };
        let dropin = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n\
             [health]\ndisk_paths = {disk_paths}\n\
             [metrics]\nsample_interval = \"1s\"\nfilesystem_timeout = \"200ms\"\n"
        );
        let dir = write_config(&pki, &dropin);
        let script = NamespacedScript::spawn_with_env(
            STUCK_MOUNT_SCRIPT,
            dir.path(),
            &dir.path().join("vitalsd.toml"),
            work.path(),
            &[(
                "HANG_FS",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuse/hang_fs.py"),
            )],
        );
        let next = |needle: &str| script.line_with(needle, Duration::from_secs(20));
        assert!(next("SERVING").contains("\"serving\""));
        let pid = next("PID ").trim_start_matches("PID ").to_string();
        let channel = pki
            .dial(&format!("127.0.0.1:{port}"))
            .connect()
            .await
            .expect("connects while the mount hangs");
        let health = HealthClient::new(channel.clone());
        let metrics = vitals::proto::metrics::metrics_client::MetricsClient::new(channel);
        let hang_point = hang.display().to_string();
        crate::support::eventually(Duration::from_secs(10), || {
            let (mut health, mut metrics) = (health.clone(), metrics.clone());
            let hang_point = hang_point.clone();
            async move {
                let status = health.check(req("")).await.map_err(|e| e.to_string())?;
                let snapshot = metrics
                    .snapshot(vitals::proto::metrics::SnapshotRequest {})
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                let mount = snapshot
                    .filesystems
                    .iter()
                    .find(|f| f.mount_point == hang_point);
                let root = snapshot.filesystems.iter().find(|f| f.mount_point == "/");
                match (watched, status.into_inner().status(), mount, root) {
                    (true, ServingStatus::NotServing, Some(m), Some(r))
                        if m.stuck && r.total_bytes > 0 =>
                    {
                        Ok(())
                    }
                    (false, ServingStatus::Serving, None, Some(r)) if r.total_bytes > 0 => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        // No connection left open, so the drain has nothing to wait for.
        drop((health, metrics));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let termed = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let exit = next("EXIT ");
        let took = termed.elapsed();
        let (_, _) = script.finish().await;
        eprintln!(
            "prober_view: FUSE mount hung, {}: vitalsd exited {} ms after SIGTERM",
            if watched {
                "watched (statfs worker process)"
            } else {
                "not watched (left out)"
            },
            took.as_millis()
        );
        assert_eq!(exit, "EXIT 0");
        assert!(
            took < Duration::from_secs(5),
            "exited {took:?} after SIGTERM"
        );
    }
}

/// A reload does not blink: probes sent back to back on new plaintext connections and on one
/// mutual-TLS connection, all through three reloads (one rejected), answer SERVING, and an
/// open Watch is sent nothing new.
#[tokio::test]
async fn reload_keeps_readiness_steady() {
    let daemon = TestDaemon::start("[health]\nplaintext_listen = [\"127.0.0.1:0\"]\n").await;
    let plain = daemon.health_addr.unwrap().to_string();
    let mut tls = daemon.health().await;
    let mut watch = tls.watch(req("")).await.unwrap().into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn({
        let done = done.clone();
        async move {
            let mut answers = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let status = tls.check(req("")).await.map(|r| r.into_inner().status());
                answers.push(status.map_err(|e| e.code()));
                let status = check_once(&plain, "").await;
                answers.push(status.ok_or(Code::Unavailable));
            }
            answers
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, dropin) in [
        "[health]\nplaintext_listen = [\"127.0.0.1:0\"]\nmin_memory_available_percent = 1.0\n",
        "[health]\nbogus = 1\n",
        "[health]\nplaintext_listen = [\"127.0.0.1:0\"]\n",
    ]
    .into_iter()
    .enumerate()
    {
        daemon.rewrite_dropin(dropin);
        daemon.signal("HUP");
        crate::support::eventually(Duration::from_secs(10), || {
            let reloads = daemon
                .logs()
                .iter()
                .filter(|l| l.contains("reloaded the config") || l.contains("reload rejected"))
                .count();
            async move {
                (reloads > i)
                    .then_some(())
                    .ok_or(format!("{reloads} reloads done"))
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = prober.await.unwrap();
    let bad: Vec<_> = answers
        .iter()
        .filter(|a| **a != Ok(ServingStatus::Serving))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} probes: {bad:?}",
        bad.len(),
        answers.len()
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(quiet.is_err(), "the watch was sent {quiet:?}");
    eprintln!(
        "prober_view: {} probes through 3 reloads, all SERVING",
        answers.len()
    );
    assert!(answers.len() >= 20, "only {} probes", answers.len());
}

/// Starts vitalsd on the config `$2` in a private mount namespace and prints its serving line
/// and pid; once `$3/stall-now` exists, stalls its sampler by mounting a FIFO over /proc/stat
/// (the sampler's next open of it waits for a writer that does not come), and prints
/// STALLED; once `$3/release` exists, unmounts it and writes the FIFO's EOF, which frees the
/// sampler, and prints RELEASED; then waits for vitalsd to exit.
const STALLED_SAMPLER_SCRIPT: &str = r#"
set -eu
vitalsd=$1 config=$2 dir=$3
mkfifo "$dir/stall"
"$vitalsd" --config "$config" 2>"$dir/vitalsd.log" &
pid=$!
for _ in $(seq 500); do grep -q '"serving"' "$dir/vitalsd.log" && break; sleep 0.02; done
echo "SERVING $(grep -m1 '"serving"' "$dir/vitalsd.log")"
echo "PID $pid"
while [ ! -e "$dir/stall-now" ]; do sleep 0.02; done
mount --bind "$dir/stall" /proc/stat
echo "STALLED"
while [ ! -e "$dir/release" ]; do sleep 0.02; done
umount -l /proc/stat
timeout 5 sh -c ': > "$0"' "$dir/stall" || true
echo "RELEASED"
code=0; wait $pid || code=$?
echo "EXIT $code"
"#;

/// The last value of `series` (name and labels as the text format writes them) on a page.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// A stalled sampler is explicit: `/metrics` keeps answering 200, its counters still read
/// at the scrape from the /proc files it holds open (node_cpu_seconds_total moves on; only
/// filesystems and sensors are the last sample's) while `vitals_sample_age_seconds` grows,
/// and once the sample is older than three intervals plus two filesystem timeouts (3.4 s
/// here) `vitals_health_check_failing{check="sample_fresh"}` is 1, the overall status
/// NOT_SERVING, the gRPC snapshot says "stale metrics", and systemd's STATUS says so without
/// any reload; when the sampler runs again, all of it clears.
#[tokio::test]
async fn stalled_sampler_is_explicit_to_scrapers_and_systemd() {
    require("unshare", "util-linux");
    let pki = Arc::new(TestPki::new());
    let port = free_port();
    let work = tempfile::tempdir().unwrap();
    let notify = crate::systemd::NotifySocket::new();
    let dropin = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n\
         [metrics]\nsample_interval = \"1s\"\nfilesystem_timeout = \"200ms\"\n"
    );
    let dir = write_config(&pki, &dropin);
    let script = NamespacedScript::spawn_with_env(
        STALLED_SAMPLER_SCRIPT,
        dir.path(),
        &dir.path().join("vitalsd.toml"),
        work.path(),
        &[("NOTIFY_SOCKET", &notify.path)],
    );
    let next = |needle: &str| script.line_with(needle, Duration::from_secs(20));
    let serving = next("SERVING");
    assert!(serving.contains("\"serving\""), "{serving}");
    let pid = next("PID ").trim_start_matches("PID ").to_string();
    notify.until("READY=1", Duration::from_secs(5));
    let addr = format!("127.0.0.1:{port}");
    let client = crate::support::prometheus::https_client(&addr, &pki, "client", b"http/1.1");
    let page = || async {
        let (status, body) = crate::support::prometheus::get(&client, "/metrics", &[]).await;
        (status.as_u16(), String::from_utf8(body.to_vec()).unwrap())
    };
    let fresh = r#"vitals_health_check_failing{check="sample_fresh",subject=""}"#;
    let overall = r#"vitals_health_serving{service=""}"#;
    // CPU 0's time over all modes: it grows with the wall clock whatever the load.
    let cpu = |page: &str| -> f64 {
        page.lines()
            .filter(|l| l.starts_with(r#"node_cpu_seconds_total{cpu="0","#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (status, before) = page().await;
    assert_eq!(
        (status, value(&before, fresh)),
        (200, Some(0.0)),
        "{before}"
    );

    std::fs::write(work.path().join("stall-now"), "").unwrap();
    next("STALLED");
    let stalled = Instant::now();
    let (status_line, _) =
        notify.until("STATUS=NOT_SERVING: stale metrics", Duration::from_secs(10));
    let flagged = stalled.elapsed();
    assert!(status_line.contains("(more than 3s)"), "{status_line}");
    let (status, first) = page().await;
    assert_eq!(status, 200);
    assert_eq!(value(&first, fresh), Some(1.0), "{first}");
    assert_eq!(value(&first, overall), Some(0.0));
    let age = value(&first, "vitals_sample_age_seconds").unwrap();
    assert!(age > 3.4, "{age}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, second) = page().await;
    assert!(
        cpu(&second) > cpu(&first) + 0.5,
        "counters as of the scrape: {} then {}\n{second}",
        cpu(&first),
        cpu(&second)
    );
    assert!(value(&second, "vitals_sample_age_seconds").unwrap() > age + 1.0);
    let snapshot = vitals::proto::metrics::metrics_client::MetricsClient::new(
        pki.dial(&addr).connect().await.unwrap(),
    )
    .snapshot(vitals::proto::metrics::SnapshotRequest {})
    .await
    .unwrap()
    .into_inner();
    let check = snapshot
        .health_checks
        .iter()
        .find(|c| c.check == "sample_fresh");
    assert!(
        check.is_some_and(|c| c.failing && c.reason.starts_with("stale metrics: the last sample is")),
        "{:?}",
        snapshot.health_checks
    );
    eprintln!(
        "prober_view: sampler stalled; STATUS and the gauge said so after {} ms (stale after 3.4 s)",
        flagged.as_millis()
    );

    std::fs::write(work.path().join("release"), "").unwrap();
    next("RELEASED");
    let released = Instant::now();
    notify.until(
        &format!("STATUS=serving on {addr}"),
        Duration::from_secs(10),
    );
    eprintln!(
        "prober_view: sampler released; STATUS serving again after {} ms",
        released.elapsed().as_millis()
    );
    // A page rendered in the last 250 ms is served again (scrape.rs, REUSE).
    crate::support::eventually(Duration::from_secs(2), || {
        let page = page();
        async move {
            let (_, after) = page.await;
            let got = (value(&after, fresh), value(&after, overall));
            (got == (Some(0.0), Some(1.0)))
                .then_some(())
                .ok_or(format!("{got:?}"))
        }
    })
    .await;

    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let exit = next("EXIT ");
    let _ = script.finish().await;
    assert_eq!(exit, "EXIT 0");
}

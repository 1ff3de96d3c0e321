//! vitalsd under a real systemd: each test boots a minimal Debian container with systemd as
//! PID 1 (`systemd-nspawn --register=no --keep-unit`, a throwaway overlay over the root that
//! scripts/nspawn-rootfs.sh builds), with systemd/vitalsd.service in /run/systemd/system,
//! the built daemon at /usr/local/bin/vitalsd and a test PKI in /etc/vitalsd. The container
//! shares the host's network, so the test talks to the daemon over mutual TLS as a prober
//! would. Needs root; a missing tool or rootfs fails the test rather than skipping it.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    time::{Duration, Instant},
};

use tonic::Code;
use vitals::{
    client::Dial,
    proto::{
        echo::{EchoRequest, echo_client::EchoClient},
        health::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        },
        metrics::{SnapshotRequest, metrics_client::MetricsClient},
    },
};

use crate::support::{TestPki, eventually, require, write_config};

/// Boot, start and restart limits: generous, a loaded CI machine boots in a few seconds.
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The container's root: $VITALS_NSPAWN_ROOTFS, else target/nspawn-rootfs in the repo.
fn rootfs() -> PathBuf {
    let dir = std::env::var_os("VITALS_NSPAWN_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nspawn-rootfs"));
    assert!(
        dir.join(".complete").exists(),
        "no container root filesystem at {}: build it with scripts/nspawn-rootfs.sh \
         (scripts/test.sh does, before the tests)",
        dir.display()
    );
    dir
}

/// systemd/vitalsd.service as shipped, with each `(from, to)` replaced; `from` must occur,
/// so a change to the unit cannot silently turn a test into a test of something else.
fn unit(replace: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/vitalsd.service");
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "the unit has no `{from}`");
        text = text.replace(from, to);
    }
    text
}

/// A booted container running the unit under test, stopped and removed when dropped.
struct Container {
    /// The script that runs systemd-nspawn; closing its stdin stops the container.
    wrapper: Child,
    stdin: Option<ChildStdin>,
    /// systemd-nspawn's PID.
    nspawn: u32,
    /// The container's PID 1 (systemd), as the host sees it.
    leader: u32,
    /// units/ (the container's /run/systemd/system) and console.log.
    work: tempfile::TempDir,
    /// The container's /etc/vitalsd.
    etc: tempfile::TempDir,
    pki: TestPki,
    port: u16,
}

impl Container {
    /// Boots a container with `unit` as vitalsd.service and `dropin` as
    /// /etc/vitalsd/vitalsd.d/50-test.toml, and waits until its systemd is running.
    async fn boot(unit: &str, dropin: &str) -> Container {
        let rootfs = rootfs();
        require("systemd-nspawn", "systemd-container");
        require("nsenter", "util-linux");
        let pki = TestPki::new();
        let port = free_port();
        let work = tempfile::tempdir().unwrap();
        let units = work.path().join("units");
        std::fs::create_dir(&units).unwrap();
        std::fs::write(units.join("vitalsd.service"), unit).unwrap();
        // The suite's config, with what differs in the container layered on top (the test's
        // own drop-in, 50-test.toml, still comes last). The dynamic user must read it all.
        let etc = write_config(&pki, dropin);
        std::fs::set_permissions(etc.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            etc.path().join("vitalsd.d/10-nspawn.toml"),
            format!(
                r#"[server]
listen = ["127.0.0.1:{port}"]

[tls]
cert = "/etc/vitalsd/tls/server.crt"
key = "/run/credentials/vitalsd.service/server.key"
client_ca = "/etc/vitalsd/tls/ca.crt"

[log]
format = "auto"
"#
            ),
        )
        .unwrap();
        let tls = etc.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        for file in ["ca.crt", "server.crt", "server.key"] {
            std::fs::copy(pki.path(file), tls.join(file)).unwrap();
        }
        // As the unit's header asks: the key is root's alone, the service gets a credential.
        std::fs::set_permissions(
            tls.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();

        let bind = |from: &Path, to: &str| format!("--bind-ro={}:{to}", from.display());
        let console = work.path().join("console.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
            .unwrap();
        let mut wrapper = Command::new("bash")
            .args(["-c", NSPAWN_SCRIPT, "nspawn"])
            .arg(&console)
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
            ])
            .arg(format!("--machine=vitals-{port}"))
            .arg(format!("--directory={}", rootfs.display()))
            .arg(bind(&units, "/run/systemd/system"))
            .arg(bind(etc.path(), "/etc/vitalsd"))
            .arg(bind(
                Path::new(crate::support::vitalsd()),
                "/usr/local/bin/vitalsd",
            ))
            .arg("--boot")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let nspawn: u32 = line
            .strip_prefix("nspawn ")
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| {
                let console = std::fs::read_to_string(&console).unwrap_or_default();
                panic!("the nspawn script said {line:?}:\n{console}")
            });
        let mut container = Container {
            wrapper,
            stdin,
            nspawn,
            leader: 0,
            work,
            etc,
            pki,
            port,
        };

        // PID 1 is the child of systemd-nspawn that has become systemd.
        let deadline = Instant::now() + WAIT;
        container.leader = loop {
            let systemd = std::fs::read_dir(format!("/proc/{nspawn}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
                .flat_map(|list| {
                    list.split_whitespace()
                        .filter_map(|pid| pid.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
                .find(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == "systemd")
                });
            if let Some(pid) = systemd {
                break pid;
            }
            container.check_nspawn();
            assert!(
                Instant::now() < deadline,
                "systemd did not start in the container:\n{}",
                container.console()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };

        // Booted: every start job done. "degraded" means a unit failed: say which.
        let deadline = Instant::now() + WAIT;
        loop {
            let output = container.exec(&["systemctl", "is-system-running"]).await;
            let state = String::from_utf8_lossy(&output.stdout).trim().to_string();
            match state.as_str() {
                "running" => break,
                "degraded" => panic!(
                    "the container booted degraded:\n{}",
                    container
                        .systemctl(&["list-units", "--failed", "--no-pager"])
                        .await
                ),
                _ => {
                    container.check_nspawn();
                    assert!(
                        Instant::now() < deadline,
                        "the container did not boot ({state}):\n{}",
                        container.console()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        container
    }

    /// Panics, with what it printed, when systemd-nspawn has exited.
    fn check_nspawn(&self) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.nspawn));
        let exited = stat.map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"));
        assert!(!exited, "systemd-nspawn exited:\n{}", self.console());
    }

    /// Runs `command` inside the container, off the runtime's thread: a blocking
    /// `systemctl stop` must not keep this test's connections from answering the GOAWAY.
    async fn exec(&self, command: &[&str]) -> Output {
        let mut nsenter = Command::new("nsenter");
        nsenter
            .args(["--target", &self.leader.to_string()])
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--"])
            .args(command)
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || nsenter.output().unwrap())
            .await
            .unwrap()
    }

    /// Runs systemctl in the container; panics, with the unit's journal, when it fails.
    async fn systemctl(&self, args: &[&str]) -> String {
        let output = self.exec(&[&["systemctl"], args].concat()).await;
        assert!(
            output.status.success(),
            "systemctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.journal().await
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Adds a drop-in to the unit (/run/systemd/system/vitalsd.service.d/NAME) and reloads
    /// systemd's view of it.
    async fn add_unit_dropin(&self, name: &str, text: &str) {
        let dir = self.work.path().join("units/vitalsd.service.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
        self.systemctl(&["daemon-reload"]).await;
    }

    /// Every property of vitalsd.service, as `systemctl show` prints them.
    async fn show(&self) -> BTreeMap<String, String> {
        self.systemctl(&["show", "vitalsd.service"])
            .await
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    async fn main_pid(&self) -> u32 {
        self.show().await["MainPID"].parse().unwrap()
    }

    /// The unit's journal inside the container, for failure messages.
    async fn journal(&self) -> String {
        let output = self
            .exec(&[
                "journalctl",
                "-u",
                "vitalsd.service",
                "--no-pager",
                "-o",
                "cat",
            ])
            .await;
        format!(
            "journal of vitalsd.service:\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    }

    /// What systemd-nspawn and the container's console printed.
    fn console(&self) -> String {
        std::fs::read_to_string(self.work.path().join("console.log")).unwrap_or_default()
    }

    /// The host side of the container's /etc/vitalsd.
    fn etc(&self, path: &str) -> PathBuf {
        self.etc.path().join(path)
    }

    fn dial(&self) -> Dial {
        Dial::mtls(
            &format!("127.0.0.1:{}", self.port),
            &self.pki.path("ca.crt"),
            &self.pki.path("client.crt"),
            &self.pki.path("client.key"),
        )
        .unwrap()
    }

    /// The overall health status, over a new connection.
    async fn health(&self) -> Result<ServingStatus, String> {
        let channel = self.dial().connect().await.map_err(|e| format!("{e:#}"))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(reply.into_inner().status())
    }

    async fn echo(&self) -> EchoClient<tonic::transport::Channel> {
        EchoClient::new(self.dial().connect().await.expect("connects over mTLS"))
    }

    /// Waits until the unit is active with a new main process (not `old`); returns its PID.
    async fn wait_active(&self, old: u32) -> u32 {
        let deadline = Instant::now() + WAIT;
        loop {
            let unit = self.show().await;
            let pid: u32 = unit["MainPID"].parse().unwrap();
            if unit["ActiveState"] == "active" && pid != 0 && pid != old {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "not active within {WAIT:?}: {} {}\n{}",
                unit["ActiveState"],
                unit["SubState"],
                self.journal().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.wrapper.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
    }
}

/// Runs systemd-nspawn in a cgroup of its own and stops the container when stdin closes
/// (the test drops it, or dies). Arguments: the console log (also its stderr), then
/// nspawn's.
/// Under --keep-unit nspawn makes its payload/ and supervisor/ cgroups inside its own, so
/// two containers started from one cgroup would share them, and each container's systemd
/// would manage the other's processes.
const NSPAWN_SCRIPT: &str = r#"
set -u
log=$1
shift
# A cgroup of our own in each hierarchy systemd uses: a sibling of this one (a cgroup2
# parent that holds processes cannot have children), left and removed at the end.
dirs=() homes=()
cleanup() {
    for i in "${!dirs[@]}"; do
        echo $$ > "${homes[i]}/cgroup.procs"
        find "${dirs[i]}" -depth -type d -exec rmdir {} +
    done
}
mapfile -t lines < /proc/self/cgroup # whole: it changes as this shell moves
for line in "${lines[@]}"; do
    IFS=: read -r _ controllers path <<< "$line"
    case $controllers in
        name=systemd) root=/sys/fs/cgroup/systemd ;;
        '') root=/sys/fs/cgroup; [ -d $root/unified ] && root=$root/unified ;;
        *) continue ;;
    esac
    dir=$root${path%/*}/vitals-nspawn-$$
    mkdir "$dir" && dirs+=("$dir") && homes+=("$root$path") && echo $$ > "$dir/cgroup.procs" ||
        { echo "cannot use cgroup $dir" >&2; cleanup; exit 1; }
done
systemd-nspawn "$@" < /dev/null >> "$log" 2>&1 &
nspawn=$!
echo "nspawn $nspawn"
read -r _
# The container is throwaway: SIGKILL its PID 1 and the kernel ends all of it at once.
kill -KILL $(cat /proc/$nspawn/task/*/children 2>/dev/null) 2>/dev/null
for _ in $(seq 200); do
    state=$(cut -d' ' -f3 /proc/$nspawn/stat 2>/dev/null) || break # reaped
    [ "$state" = Z ] && break
    sleep 0.05
done
kill -KILL $nspawn 2>/dev/null
wait $nspawn
cleanup
"#;

/// The unit turns active only once the daemon has sent READY=1: while the daemon is held
/// before it (its client CA comes through a FIFO the test has not written) the unit is
/// activating and nothing answers; once released, the unit is active and a health check
/// made at that moment gets SERVING. A blocking `systemctl start` returns only then too.
#[tokio::test]
async fn unit_is_active_only_after_ready() {
    let container = Container::boot(&unit(&[]), "").await;
    let ca = container.etc("tls/ca.crt");
    let pem = std::fs::read(&ca).unwrap();
    std::fs::remove_file(&ca).unwrap();
    require("mkfifo", "coreutils");
    assert!(Command::new("mkfifo").arg(&ca).status().unwrap().success());
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();

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

    // Writing blocks until the daemon reads; a thread, so a test failure cannot hang it.
    let (tx, rx) = std::sync::mpsc::channel();
    let (fifo, written) = (ca.clone(), pem.clone());
    std::thread::spawn(move || tx.send(std::fs::write(fifo, written).is_ok()));
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
    assert_eq!(rx.recv_timeout(WAIT), Ok(true), "the daemon read its CA");

    // A plain CA file again, then stop and a blocking start: it returns after READY.
    let plain = container.etc("tls/ca.crt.new");
    std::fs::write(&plain, &pem).unwrap();
    std::fs::rename(&plain, &ca).unwrap();
    container.systemctl(&["stop", "vitalsd.service"]).await;
    container.systemctl(&["start", "vitalsd.service"]).await;
    assert_eq!(container.health().await, Ok(ServingStatus::Serving));
    assert_eq!(container.show().await["ActiveState"], "active");
}

/// DynamicUser and LoadCredential: the daemon runs as a transient user (not root) and serves
/// with a TLS key that this user cannot read at its path (root's, 0600) but gets as a
/// credential only it can read.
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
        .map(|i| {
            let mut client = clients[i % 2].clone();
            tokio::spawn(async move {
                client
                    .echo(EchoRequest {
                        echo_message: format!("call {i}"),
                        delay_ms: 1500,
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    let metrics = MetricsClient::new(container.dial().connect().await.unwrap());
    eventually(WAIT, || {
        let mut metrics = metrics.clone();
        async move {
            let snapshot = metrics
                .snapshot(SnapshotRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let in_flight = snapshot
                .rpc
                .iter()
                .find(|m| m.method == "/vitals.echo.v1.Echo/Echo")
                .map_or(0, |m| m.in_flight);
            (in_flight == CALLS as u64)
                .then_some(())
                .ok_or(format!("{in_flight} echo calls in flight"))
        }
    })
    .await;

    let stopping = Instant::now();
    container.systemctl(&["stop", "vitalsd.service"]).await;
    // Well inside drain_timeout (10s): the daemon exits once its calls are done.
    let elapsed = stopping.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "stopped after {elapsed:?}"
    );
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call.await.unwrap();
        let reply = reply.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(reply.into_inner().echo_message, format!("call {i}"));
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

//! A booted systemd-nspawn container for the real-systemd tests (`nspawn.rs`): a minimal
//! Debian root (scripts/nspawn-rootfs.sh) with systemd as PID 1, the unit under test in
//! /run/systemd/system, the built daemon at /usr/local/bin/vitalsd and a test PKI in
//! /etc/vitalsd, on the host's network.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    time::{Duration, Instant},
};

use vitals::{
    client::Dial,
    proto::{
        echo::echo_client::EchoClient,
        health::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        },
    },
};

use super::{TestPki, free_port, require, vitalsd, write_config};

/// Boot, start and restart limits: generous, a loaded CI machine boots in a few seconds.
pub const WAIT: Duration = Duration::from_secs(30);

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
pub fn unit(replace: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/vitalsd.service");
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "the unit has no `{from}`");
        text = text.replace(from, to);
    }
    text
}

/// A booted container running the unit under test, stopped and removed when dropped.
pub struct Container {
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
    pub async fn boot(unit: &str, dropin: &str) -> Container {
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
            .arg(bind(Path::new(vitalsd()), "/usr/local/bin/vitalsd"))
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
    pub async fn exec(&self, command: &[&str]) -> Output {
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
    pub async fn systemctl(&self, args: &[&str]) -> String {
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
    pub async fn add_unit_dropin(&self, name: &str, text: &str) {
        let dir = self.work.path().join("units/vitalsd.service.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
        self.systemctl(&["daemon-reload"]).await;
    }

    /// Every property of vitalsd.service, as `systemctl show` prints them.
    pub async fn show(&self) -> BTreeMap<String, String> {
        self.systemctl(&["show", "vitalsd.service"])
            .await
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    /// vitalsd.service's main PID, as the container numbers it.
    pub async fn main_pid(&self) -> u32 {
        self.show().await["MainPID"].parse().unwrap()
    }

    /// The unit's journal inside the container, for failure messages.
    pub async fn journal(&self) -> String {
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
    pub fn etc(&self, path: &str) -> PathBuf {
        self.etc.path().join(path)
    }

    /// The PKI of the daemon in the container (its server certificate, the clients').
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// Dial settings for the daemon in the container, as the default test client.
    pub fn dial(&self) -> Dial {
        self.pki.dial(&format!("127.0.0.1:{}", self.port))
    }

    /// The overall health status, over a new connection.
    pub async fn health(&self) -> Result<ServingStatus, String> {
        let channel = self.dial().connect().await.map_err(|e| format!("{e:#}"))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(reply.into_inner().status())
    }

    /// An echo client on a new mutual TLS connection.
    pub async fn echo(&self) -> EchoClient<tonic::transport::Channel> {
        EchoClient::new(self.dial().connect().await.expect("connects over mTLS"))
    }

    /// Waits until the unit is active with a new main process (not `old`); returns its PID.
    pub async fn wait_active(&self, old: u32) -> u32 {
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

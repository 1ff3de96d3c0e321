//! The test harness: a fresh PKI, the real `vitalsd` binary started on a temp config, and
//! clients that talk to it over mutual TLS.

pub mod bao;
pub mod fake;
pub mod gate;
pub mod hostile_pki;
pub mod nspawn;
pub mod prometheus;
pub mod raw;
pub mod vitalsctl;

use std::{
    ffi::{OsStr, OsString},
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

use tempfile::TempDir;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use vitals::{
    client::Dial,
    pki::{Authority, Leaf, Usage, write_file},
    proto::{
        echo::{EchoRequest, echo_client::EchoClient},
        health::health_client::HealthClient,
        metrics::{SnapshotRequest, metrics_client::MetricsClient},
    },
    tls::{self, ClientAuth},
};

/// The identity of the default test client certificate.
pub const CLIENT_ID: &str = "spiffe://test.vitals/client";

/// A CA with a server certificate and a client certificate, written to a temp directory.
pub struct TestPki {
    pub dir: TempDir,
    pub ca: Authority,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("vitals test CA").unwrap();
        write_file(&dir.path().join("ca.crt"), &ca.cert_pem(), 0o644).unwrap();
        let pki = TestPki { dir, ca };
        pki.issue(
            "server",
            &Leaf::new(
                "vitalsd test",
                &["localhost", "127.0.0.1", "::1"],
                Usage::Server,
                30,
            ),
        );
        pki.issue(
            "client",
            &Leaf::new("client", &[CLIENT_ID], Usage::Client, 30),
        );
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `NAME.crt` and `NAME.key` (mode 0600) for a new leaf; returns their paths.
    pub fn issue(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let pem = self.ca.issue(leaf).unwrap();
        let cert = self.path(&format!("{name}.crt"));
        let key = self.path(&format!("{name}.key"));
        write_file(&cert, &pem.cert, 0o644).unwrap();
        write_file(&key, &pem.key, 0o600).unwrap();
        (cert, key)
    }

    /// Dial settings for a server at `addr` with this CA, as the default client.
    pub fn dial(&self, addr: &str) -> Dial {
        self.dial_as(addr, "client")
    }

    /// Dial settings for a server at `addr` with this CA, as the client `NAME.crt`/`NAME.key`.
    pub fn dial_as(&self, addr: &str, name: &str) -> Dial {
        Dial::mtls(
            addr,
            &self.path("ca.crt"),
            &self.path(&format!("{name}.crt")),
            &self.path(&format!("{name}.key")),
        )
        .unwrap()
    }
}

/// The config every test daemon starts from; a test adds a drop-in on top.
fn base_config(pki: &TestPki) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
drain_timeout = "10s"
shutdown_delay = "0s"

[tls]
cert = "{}"
key = "{}"
client_ca = "{}"

[metrics]
sample_interval = "1s"

[[auth.rules]]
identities = ["{CLIENT_ID}"]
methods = ["*"]

[log]
format = "json"
level = "info"
access = true
"#,
        pki.path("server.crt").display(),
        pki.path("server.key").display(),
        pki.path("ca.crt").display()
    )
}

/// Waits (up to 15 s) for the "serving" line of a daemon that logs JSON to its piped stderr;
/// returns that line's fields and the log lines, which keep being collected. Kills the daemon and panics with its log when it exits or stays silent.
pub async fn wait_serving(child: &mut Child) -> (serde_json::Value, Arc<Mutex<Vec<String>>>) {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr piped");
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && json["fields"]["message"] == "serving"
            {
                let _ = tx.send(json["fields"].clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let fields = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(15)))
        .await
        .unwrap();
    let Ok(fields) = fields else {
        let _ = child.kill();
        let status = child.wait().unwrap();
        panic!(
            "vitalsd did not start ({status}):\n{}",
            logs.lock().unwrap().join("\n")
        );
    };
    (fields, logs)
}

/// The first address of a "serving" line's `listen` field (a comma-separated list).
pub fn first_listen(listen: &serde_json::Value) -> &str {
    listen.as_str().unwrap().split(',').next().unwrap()
}

/// A running `vitalsd`, killed when dropped.
pub struct TestDaemon {
    child: Child,
    pub addr: SocketAddr,
    /// The plaintext health listener, when the config asked for one.
    pub health_addr: Option<SocketAddr>,
    pub pki: Arc<TestPki>,
    pub config_dir: TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

/// The daemon under test: `$VITALS_TEST_VITALSD` when set (an ARM build, say), else the
/// one cargo built for this test run.
pub fn vitalsd() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var("VITALS_TEST_VITALSD")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_vitalsd").to_string())
    })
}

/// A command that runs the daemon under test, behind `$VITALS_TEST_RUNNER` when set: a
/// command prefix split on whitespace, such as `qemu-aarch64-static -L /usr/aarch64-linux-gnu`.
pub fn vitalsd_command() -> Command {
    let runner = std::env::var("VITALS_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(vitalsd());
            command
        }
        None => Command::new(vitalsd()),
    }
}

/// Writes `vitalsd.toml` (the base config) and `vitalsd.d/50-test.toml` (`dropin`).
pub fn write_config(pki: &TestPki, dropin: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vitalsd.toml"), base_config(pki)).unwrap();
    std::fs::create_dir(dir.path().join("vitalsd.d")).unwrap();
    std::fs::write(dir.path().join("vitalsd.d/50-test.toml"), dropin).unwrap();
    dir
}

/// What a test daemon starts with: `TestDaemon::builder().pki(pki).dropin(toml)
/// .env("K", "v").start().await`. Unset, the PKI is a fresh one and the drop-in empty.
#[derive(Default)]
pub struct TestDaemonBuilder {
    pki: Option<Arc<TestPki>>,
    dropin: String,
    /// More drop-ins, by file name, beside `50-test.toml`.
    dropins: Vec<(String, String)>,
    env: Vec<(OsString, OsString)>,
}

impl TestDaemonBuilder {
    /// Serve with this PKI's server certificate (shared, say, with other daemons, or holding
    /// extra client certificates).
    pub fn pki(mut self, pki: impl Into<Arc<TestPki>>) -> TestDaemonBuilder {
        self.pki = Some(pki.into());
        self
    }

    /// Apply this TOML over the base config, as `vitalsd.d/50-test.toml`.
    pub fn dropin(mut self, toml: impl Into<String>) -> TestDaemonBuilder {
        self.dropin = toml.into();
        self
    }

    /// Also apply `vitalsd.d/NAME` (read in lexical order with `50-test.toml`).
    pub fn dropin_file(mut self, name: &str, toml: impl Into<String>) -> TestDaemonBuilder {
        self.dropins.push((name.to_string(), toml.into()));
        self
    }

    /// Set this variable in the daemon's environment.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> TestDaemonBuilder {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts the daemon and waits until it says it serves.
    pub async fn start(self) -> TestDaemon {
        let pki = self.pki.unwrap_or_else(|| Arc::new(TestPki::new()));
        let config_dir = write_config(&pki, &self.dropin);
        for (name, text) in &self.dropins {
            std::fs::write(config_dir.path().join("vitalsd.d").join(name), text).unwrap();
        }
        let mut command = vitalsd_command();
        command
            .arg("--config")
            .arg(config_dir.path().join("vitalsd.toml"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            // glibc's tunables as a test sets them, not as the shell running the tests
            // has them (the daemon sets its own when there are none).
            .env_remove("GLIBC_TUNABLES")
            .env_remove("VITALS_MALLOC_REEXECUTED")
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("vitalsd starts");
        let (fields, logs) = wait_serving(&mut child).await;
        let addr = first_listen(&fields["listen"]).parse().unwrap();
        let health_addr = fields["health_listen"]
            .as_str()
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok());
        TestDaemon {
            child,
            addr,
            health_addr,
            pki,
            config_dir,
            logs,
        }
    }
}

impl TestDaemon {
    /// A daemon to configure before it starts.
    pub fn builder() -> TestDaemonBuilder {
        TestDaemonBuilder::default()
    }

    /// Starts a daemon with a fresh PKI and `dropin` applied over the base config.
    pub async fn start(dropin: &str) -> TestDaemon {
        TestDaemon::builder().dropin(dropin).start().await
    }

    /// Replaces the test drop-in (`vitalsd.d/50-test.toml`), e.g. before a reload.
    pub fn rewrite_dropin(&self, text: &str) {
        std::fs::write(self.config_dir.path().join("vitalsd.d/50-test.toml"), text).unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (TERM, HUP, KILL, STOP, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the daemon to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vitalsd did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the daemon printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (up to 15 s) until a line the daemon printed satisfies `matches`.
    pub async fn wait_for_log(&self, matches: impl Fn(&str) -> bool) {
        eventually(Duration::from_secs(15), || async {
            self.logs()
                .iter()
                .any(|l| matches(l))
                .then_some(())
                .ok_or_else(|| "no such log line yet".to_string())
        })
        .await;
    }

    /// Waits until the daemon has written a line with this tracing target, then returns
    /// all of them (stderr reaches the test a moment after the daemon answers).
    pub async fn wait_for_lines(&self, target: &str) -> Vec<serde_json::Value> {
        self.wait_for_log(|l| l.contains(&format!("\"target\":\"{target}\"")))
            .await;
        self.log_json()
            .into_iter()
            .filter(|l| l["target"] == target)
            .collect()
    }

    /// Waits (up to 10 s) until the daemon counts `n` calls of `path` in flight.
    pub async fn wait_in_flight(&self, path: &str, n: u64) {
        wait_in_flight(&self.metrics().await, path, n, Duration::from_secs(10)).await;
    }

    /// The daemon's log lines as JSON.
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Dial settings for the default client certificate.
    pub fn dial(&self) -> Dial {
        self.dial_as("client")
    }

    /// Dial settings for the client certificate `NAME.crt`/`NAME.key` of this PKI.
    pub fn dial_as(&self, name: &str) -> Dial {
        self.pki.dial_as(&self.addr.to_string(), name)
    }

    pub async fn channel(&self) -> Channel {
        self.dial().connect().await.expect("connects over mTLS")
    }

    pub async fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    pub async fn echo(&self) -> EchoClient<Channel> {
        EchoClient::new(self.channel().await)
    }

    pub async fn metrics(&self) -> MetricsClient<Channel> {
        MetricsClient::new(self.channel().await)
    }

    /// Asserts that a default echo on a new connection succeeds.
    pub async fn echo_ok(&self) {
        self.echo()
            .await
            .echo(EchoRequest::default())
            .await
            .expect("an echo on a new connection succeeds");
    }

    /// The daemon's metrics snapshot, over a new connection.
    pub async fn snapshot(&self) -> vitals::proto::metrics::Snapshot {
        self.metrics()
            .await
            .snapshot(SnapshotRequest {})
            .await
            .expect("a metrics snapshot")
            .into_inner()
    }

    /// A raw HTTP/2 connection (`support/raw.rs`) as the default client, for what a channel
    /// hides.
    pub async fn raw_connect(&self) -> raw::RawConn {
        let tls = self.client_tls(ClientAuth::Certificate {
            cert: &self.pki.path("client.crt"),
            key: &self.pki.path("client.key"),
        });
        raw::connect(self.addr, tls).await
    }

    /// A rustls client config trusting this daemon's CA, with the given client auth.
    pub fn client_tls(&self, auth: ClientAuth<'_>) -> rustls::ClientConfig {
        tls::client_config(&self.pki.path("ca.crt"), auth).unwrap()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One method's statistics in a metrics snapshot.
pub fn method_stats<'a>(
    snapshot: &'a vitals::proto::metrics::Snapshot,
    path: &str,
) -> &'a vitals::proto::metrics::MethodStats {
    snapshot
        .rpc
        .iter()
        .find(|m| m.method == path)
        .unwrap_or_else(|| panic!("no statistics for {path} in {:?}", snapshot.rpc))
}

/// Starts an echo of `message` on `client`'s connection, answered after `delay_ms`; the
/// task ends with the message that came back.
pub fn spawn_echo(
    client: &EchoClient<Channel>,
    message: &str,
    delay_ms: u32,
) -> JoinHandle<Result<String, tonic::Status>> {
    let mut client = client.clone();
    let request = EchoRequest {
        echo_message: message.to_string(),
        delay_ms,
        ..Default::default()
    };
    tokio::spawn(async move {
        client
            .echo(request)
            .await
            .map(|r| r.into_inner().echo_message)
    })
}

/// Waits (up to `limit`) until `metrics` counts exactly `n` calls of `path` in flight.
pub async fn wait_in_flight(metrics: &MetricsClient<Channel>, path: &str, n: u64, limit: Duration) {
    eventually(limit, || {
        let mut metrics = metrics.clone();
        async move {
            let snapshot = metrics
                .snapshot(SnapshotRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let running = snapshot
                .rpc
                .iter()
                .find(|m| m.method == path)
                .map_or(0, |m| m.in_flight);
            (running == n).then_some(()).ok_or_else(|| {
                let calls: Vec<_> = (snapshot.rpc.iter())
                    .map(|m| (&m.method, m.calls, m.in_flight))
                    .collect();
                format!("{running} of {n} calls of {path} in flight; (method, calls, in flight): {calls:?}")
            })
        }
    })
    .await;
}

/// Connects as soon as the server accepts (for servers started by something else, such as
/// systemd-socket-activate or a wrapper script).
pub async fn connect_when_up(dial: &Dial) -> Channel {
    eventually(Duration::from_secs(10), || async {
        dial.connect().await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    dial.connect().await.expect("connects once up")
}

/// A loopback port that was free a moment ago (for servers that must be told their port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Panics with an install hint when `tool` is not on PATH: a test that needs a real
/// component fails when it is missing, it never skips.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: scripts/test.sh installs it (apt-get install {package})"
    );
}

/// Retries `check` until it passes or `limit` passes (then panics with its last message).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return,
            Err(message) if Instant::now() >= deadline => panic!("not within {limit:?}: {message}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs `vitalsd` with these arguments and environment to completion.
pub fn run_vitalsd(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (Option<i32>, String) {
    let output = vitalsd_command()
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// A bash script run in a private mount namespace (`unshare -m`: what it mounts is gone
/// with it) with the daemon binary, the config and one more argument as $1, $2 and $3;
/// its stdout arrives line by line.
pub struct NamespacedScript {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl NamespacedScript {
    pub fn spawn(script: &str, dir: &Path, config: &Path, arg: &Path) -> NamespacedScript {
        NamespacedScript::spawn_with_env(script, dir, config, arg, &[])
    }

    /// The same, with `env` set for the script.
    pub fn spawn_with_env(
        script: &str,
        dir: &Path,
        config: &Path,
        arg: &Path,
        env: &[(&str, &str)],
    ) -> NamespacedScript {
        require("unshare", "util-linux");
        let path = dir.join("script.sh");
        std::fs::write(&path, script).unwrap();
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "bash"])
            .arg(&path)
            .arg(vitalsd())
            .arg(config)
            .arg(arg)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare (util-linux) runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        NamespacedScript { child, lines }
    }

    /// The next line holding `needle` (the lines before it are skipped); panics after `limit`.
    pub fn line_with(&self, needle: &str, limit: Duration) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(limit)
                .unwrap_or_else(|_| panic!("the script printed no line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits for the script to end (off the async runtime), then returns how it ended and
    /// the lines it printed that were not yet taken.
    pub async fn finish(mut self) -> (ExitStatus, Vec<String>) {
        tokio::task::spawn_blocking(move || {
            let status = self.child.wait().expect("waiting for the script");
            (status, self.lines.try_iter().collect())
        })
        .await
        .unwrap()
    }
}

/// The variable `key` in a process's environment as /proc/PID/environ holds it
/// (`KEY=value`, NUL separated), `GLIBC_TUNABLES` whole again. glibc's loader (2.36) parses that variable in
/// place, ending each tunable's value with a NUL there, so the raw block holds
/// `GLIBC_TUNABLES=a=1`, `b=2`, ... as if they were separate entries (the process itself
/// reads an intact copy). The fragments that follow it and name a `glibc.` tunable are
/// joined back with `:`.
pub fn environ_var(raw: &[u8], key: &str) -> Option<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for entry in raw
        .split(|&b| b == 0)
        .filter_map(|e| std::str::from_utf8(e).ok())
    {
        if let Some((name, value)) = vars.last_mut()
            && name == "GLIBC_TUNABLES"
            && entry.starts_with("glibc.")
        {
            value.push(':');
            value.push_str(entry);
            continue;
        }
        if let Some((name, value)) = entry.split_once('=') {
            vars.push((name.to_string(), value.to_string()));
        }
    }
    vars.into_iter().find_map(|(k, v)| (k == key).then_some(v))
}

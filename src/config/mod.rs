//! Configuration: the files pushed onto the device, read in layers, validated whole.
//!
//! Layers, later ones winning: built-in defaults (the `Default`s in `raw.rs`), the main file
//! (`/etc/vitalsd/vitalsd.toml` or `--config FILE`), `vitalsd.d/*.toml` beside it in
//! lexical order, then `VITALSD_*` environment variables (`VITALSD_SERVER__LISTEN=a,b`).
//!
//! Two stages, as ripgrep does with its arguments: [`RawConfig`] is what serde reads (strings
//! for durations and addresses, unknown keys refused), [`Config`] is the validated, typed
//! value the daemon runs on. Every error names the file (or "the environment"), the key and
//! the reason.
//!
//! - `raw.rs`: the serde schema and its defaults
//! - `layers.rs`: files, drop-ins and the environment layered by the `config` crate, with the
//!   origin of every value; the grants (`auth.rules`, `auth.bearer`) accumulate across layers
//! - `validate.rs`: raw into typed
//! - [`units`]: the one duration and size grammar, which vitalsctl's flags use too

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

mod layers;
mod raw;
pub use raw::{DISK_DEVICES_EXCLUDE, FS_TYPES_EXCLUDE, MOUNT_POINTS_EXCLUDE};
pub mod units;
mod validate;

pub use raw::{
    RawAuth, RawBearer, RawConfig, RawEcho, RawHealth, RawIssue, RawLog, RawMetrics, RawPush,
    RawRule, RawSecrets, RawServer, RawSource, RawTls,
};

use layers::Layers;

/// Where the daemon looks for its config when not told otherwise.
pub const DEFAULT_PATH: &str = "/etc/vitalsd/vitalsd.toml";
/// The drop-in directory, beside the main file.
pub const DROPIN_DIR: &str = "vitalsd.d";
/// Prefix of environment overrides; `__` separates key levels.
pub const ENV_PREFIX: &str = "VITALSD";
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that could not be read or parsed as TOML.
    #[error("{}: {}", one_line(.origin), one_line(.reason))]
    Parse { origin: String, reason: String },
    /// A key that is unknown, of the wrong type, or has an invalid value.
    #[error("{}: `{}`: {}", one_line(.origin), one_line(.key), one_line(.reason))]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
    #[error("reading drop-in directory {}", one_line(&.path.display().to_string()))]
    DropinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A message part as one line: control characters (a newline in a quoted key or a string
/// value, say) are written escaped, so an error is always one log line.
fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Which files to read.
#[derive(Debug, Clone)]
pub enum Location {
    /// `/etc/vitalsd/vitalsd.toml`, which may be absent (then defaults and drop-ins apply).
    Default,
    /// `--config FILE`: must exist.
    File(PathBuf),
    /// `--dev`: no files; TLS from the dev PKI in this directory, loopback listener.
    Dev(PathBuf),
}

/// The typed, validated configuration the daemon runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: Server,
    pub tls: Tls,
    pub health: Health,
    pub metrics: Metrics,
    pub log: Log,
    pub secrets: Secrets,
    pub auth: Auth,
    pub echo: Echo,
    pub push: Push,
    /// The files that were read, in order, for the startup log line.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub max_calls: usize,
    pub max_request_buffer: usize,
    pub first_message_timeout: Duration,
    pub handshake_timeout: Duration,
    pub tcp_keepalive: Option<Duration>,
    pub http2_keepalive_interval: Option<Duration>,
    pub http2_keepalive_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub max_message_size: usize,
    pub max_header_list_size: u32,
    pub max_deadline: Duration,
    pub max_connection_idle: Option<Duration>,
    pub max_connection_age: Option<Duration>,
    pub max_connection_age_grace: Duration,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub worker_threads: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: Material,
    pub client_ca: PathBuf,
    pub crl: Vec<PathBuf>,
    /// `[tls.issue]`: issued and renewed by a pki engine; `cert` and `key` are then both
    /// [`Issue::file`].
    pub issue: Option<Box<Issue>>,
    /// How the files above are followed on disk.
    pub watch: FileWatch,
}

/// `tls.watch*`: following the certificate, key, client CA and CRL files on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct FileWatch {
    pub mode: WatchMode,
    /// Quiet time after the last change before the files are read.
    pub debounce: Duration,
    /// Between looks when polling.
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify on the files' directories; polling when inotify cannot be set up.
    Auto,
    /// A look at each file's inode, size and times every interval (network and FUSE
    /// filesystems, whose changes inotify does not see).
    Poll,
    Off,
}

/// `[tls.issue]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub addr: String,
    pub ca_cert: PathBuf,
    pub namespace: Option<String>,
    pub timeout: Duration,
    pub mount: String,
    pub role: String,
    pub common_name: String,
    pub alt_names: Vec<String>,
    pub uri_sans: Vec<String>,
    pub ip_sans: Vec<std::net::IpAddr>,
    /// The key made on the device for each certificate.
    pub key_type: crate::x509::KeyType,
    /// The CA bundle an issued certificate must chain to (`tls.client_ca` unless given).
    pub issuer_ca: PathBuf,
    /// `None`: the role's.
    pub ttl: Option<Duration>,
    /// `None`: a third of the lifetime.
    pub renew_before: Option<Duration>,
    /// `None`: a tenth of the renewal window.
    pub jitter: Option<Duration>,
    pub state_dir: PathBuf,
    /// `Cert` logs in with the current certificate (its `cert` and `key` are unused).
    pub auth: VaultAuth,
    /// An AppRole for when cert auth has no valid certificate to log in with.
    pub fallback: Option<VaultAuth>,
}

impl Issue {
    /// The one file holding the key and the chain (mode 0600): one rename replaces both,
    /// so a crash never leaves a key beside a certificate it does not match.
    pub fn file(&self) -> PathBuf {
        self.state_dir.join(ISSUED_FILE)
    }
}

/// The file in the state directory that holds the issued key and chain.
pub const ISSUED_FILE: &str = "issued.pem";

/// Where secret material comes from: a file, or a pulled secret (`secret:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    Path(PathBuf),
    Secret(String),
}

impl fmt::Display for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Material::Path(path) => write!(f, "{}", path.display()),
            Material::Secret(name) => write!(f, "{SECRET_PREFIX}{name}"),
        }
    }
}

/// `[push]`: Prometheus remote_write.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// `None`: no push.
    pub url: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub auth: PushAuth,
    pub ca_cert: PathBuf,
    pub labels: std::collections::BTreeMap<String, String>,
    pub buffer_size: usize,
    pub buffer_dir: Option<PathBuf>,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// How the push proves itself to the receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum PushAuth {
    None,
    /// A client certificate and key (by default the device's `tls.cert` and `tls.key`).
    Mtls {
        cert: PathBuf,
        key: Material,
    },
    /// `authorization: Bearer` with this secret.
    Bearer {
        token: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    /// Honour the echo request's `panic` knob (for testing; off in production).
    pub allow_panic: bool,
}

/// Who may call what (see [`crate::auth`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// Method patterns any verified client may call.
    pub public: Vec<String>,
    /// Method patterns whose every call is audit-logged.
    pub audit: Vec<String>,
    pub rules: Vec<RuleConfig>,
    pub bearer: Vec<BearerConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// Exact identities, `prefix*`, or `*` for any verified client.
    pub identities: Vec<String>,
    /// `pkg.Service/Method`, `pkg.Service/*` or `*`.
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BearerConfig {
    pub methods: Vec<String>,
    pub kind: BearerKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BearerKind {
    /// Secret names of the accepted tokens.
    Opaque { tokens: Vec<String> },
    Jwt {
        algorithm: JwtAlgorithm,
        /// Secret name: the HMAC key (HS256) or a PEM P-256 public key (ES256).
        key: String,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Es256,
}

impl JwtAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Es256 => "ES256",
        }
    }
}

/// How a config value refers to a pulled secret.
pub const SECRET_PREFIX: &str = "secret:";

/// Pulled secrets: where from, and how long startup may wait for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Secrets {
    pub startup_timeout: Duration,
    pub sources: Vec<Source>,
}

/// One place secrets are pulled from; the first source that has a name wins.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// systemd's `$CREDENTIALS_DIRECTORY/NAME` (LoadCredential=, LoadCredentialEncrypted=).
    Credentials,
    /// `DIR/NAME`, one secret per file, refused when readable by group or others.
    File { dir: PathBuf },
    /// HashiCorp Vault or OpenBao, KV version 2.
    Vault(Box<Vault>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vault {
    /// `https://host:port`.
    pub addr: String,
    pub mount: String,
    pub path: String,
    pub namespace: Option<String>,
    pub ca_cert: PathBuf,
    /// Per request.
    pub timeout: Duration,
    pub auth: VaultAuth,
    /// Secret name -> field of the KV entry.
    pub fields: std::collections::BTreeMap<String, String>,
    /// How often the entry's version is checked while running; `None`: only at start and
    /// reload.
    pub refresh_interval: Option<Duration>,
}

/// How vitalsd logs in to Vault. Names are secrets from the non-Vault sources.
#[derive(Debug, Clone, PartialEq)]
pub enum VaultAuth {
    Token {
        token: String,
    },
    AppRole {
        mount: String,
        role_id: String,
        secret_id: String,
    },
    /// TLS certificate auth with the device's own certificate: `client_cert`/`client_key`,
    /// by default `tls.cert`/`tls.key`.
    Cert {
        mount: String,
        role: Option<String>,
        cert: Option<PathBuf>,
        key: Option<Material>,
    },
}

impl Config {
    /// The names of every secret this config refers to, in a stable order.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Material::Secret(name) = &self.tls.key {
            names.push(name.clone());
        }
        for source in &self.secrets.sources {
            if let Source::Vault(vault) = source {
                match &vault.auth {
                    VaultAuth::Token { token } => names.push(token.clone()),
                    VaultAuth::AppRole {
                        role_id, secret_id, ..
                    } => {
                        names.push(role_id.clone());
                        names.push(secret_id.clone());
                    }
                    VaultAuth::Cert {
                        key: Some(Material::Secret(name)),
                        ..
                    } => names.push(name.clone()),
                    VaultAuth::Cert { .. } => {}
                }
            }
        }
        if let Some(issue) = &self.tls.issue {
            for auth in std::iter::once(&issue.auth).chain(&issue.fallback) {
                match auth {
                    VaultAuth::Token { token } => names.push(token.clone()),
                    VaultAuth::AppRole {
                        role_id, secret_id, ..
                    } => {
                        names.push(role_id.clone());
                        names.push(secret_id.clone());
                    }
                    VaultAuth::Cert { .. } => {}
                }
            }
        }
        match &self.push.auth {
            PushAuth::Bearer { token } => names.push(token.clone()),
            PushAuth::Mtls {
                key: Material::Secret(name),
                ..
            } => names.push(name.clone()),
            PushAuth::Mtls { .. } | PushAuth::None => {}
        }
        for bearer in &self.auth.bearer {
            match &bearer.kind {
                BearerKind::Opaque { tokens } => names.extend(tokens.iter().cloned()),
                BearerKind::Jwt { key, .. } => names.push(key.clone()),
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub plaintext_listen: Vec<ListenAddr>,
    pub plaintext_max_connections: usize,
    pub disk_paths: Vec<PathBuf>,
    pub min_disk_free_percent: f64,
    pub min_memory_available_percent: f64,
    pub max_temperature_celsius: Option<f64>,
    /// NOT_SERVING below this much certificate validity (zero: only once expired).
    pub min_cert_validity: Duration,
}

/// Where a plaintext health listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// `unix:/path`: a socket file, replaced at start when stale, removed at stop.
    Unix(PathBuf),
    /// `unix-abstract:name`: Linux's abstract namespace, no file.
    UnixAbstract(String),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddr::UnixAbstract(name) => write!(f, "unix-abstract:{name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub sample_interval: Duration,
    /// A filesystem that does not answer statfs within this is reported stuck.
    pub filesystem_timeout: Duration,
    /// node_exporter's exclusions: mount points and filesystem types not read (a mount
    /// holding a health.disk_paths entry is read all the same), block and network devices
    /// left out of the metrics. `None`: nothing excluded.
    pub filesystem_mount_points_exclude: Option<Pattern>,
    pub filesystem_types_exclude: Option<Pattern>,
    pub disk_devices_exclude: Option<Pattern>,
    pub network_devices_exclude: Option<Pattern>,
    /// The textfile collector's directory of `*.prom` files; `None`: off.
    pub textfile_directory: Option<PathBuf>,
}

/// A regular expression from the config, compared and shown as it was written.
#[derive(Clone)]
pub struct Pattern {
    pub text: String,
    pub regex: regex_lite::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// A filter such as `info` or `info,vitals=debug` (tracing-subscriber's `Targets`).
    pub level: String,
    pub format: LogFormat,
    /// One line per call (target `vitals::access`, level info).
    pub access: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald when `$JOURNAL_STREAM` says stderr is the journal, text otherwise.
    Auto,
    Text,
    Json,
    Journald,
}

impl Config {
    /// Reads every layer for `location`, then validates the result.
    pub fn load(location: &Location) -> Result<Config, Error> {
        let (layers, files) = Layers::read(location)?;
        let raw = layers.raw()?;
        let mut config = validate::validate(&layers, raw, files)?;
        if let Location::Dev(_) = location {
            // The dev client may call everything, so the README's commands work.
            config.auth.rules.push(RuleConfig {
                identities: vec![crate::pki::DEV_CLIENT_IDENTITY.to_string()],
                methods: vec!["*".to_string()],
            });
        }
        Ok(config)
    }

    /// Validates one config text on its own (defaults, then `text`; no files, no
    /// environment), exactly as a file with that content would be: for fuzzing and tools.
    pub fn parse(origin: &str, text: &str) -> Result<Config, Error> {
        let layers = Layers::from_text(origin, text)?;
        let raw = layers.raw()?;
        validate::validate(&layers, raw, Vec::new())
    }

    /// Reads every layer and returns the merged raw config without validating it, and where
    /// each value a layer set came from (`(key, file or "the environment")`, a list of
    /// tables entry by entry), for `--check-config` after [`Config::load`] has succeeded.
    pub fn load_raw(location: &Location) -> Result<(RawConfig, Vec<(String, String)>), Error> {
        let layers = Layers::read(location)?.0;
        Ok((layers.raw()?, layers.origins()))
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, path::Path};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn load_file(text: &str) -> (tempfile::TempDir, Result<Config, Error>) {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "vitalsd.toml", text);
        let result = Config::load(&Location::File(main));
        (dir, result)
    }

    /// An empty file gives the documented defaults.
    #[test]
    fn empty_file_gives_defaults() {
        let (_dir, config) = load_file("");
        let config = config.unwrap();
        assert_eq!(
            config.server.listen,
            vec!["127.0.0.1:50051".parse().unwrap()]
        );
        assert_eq!(config.server.max_message_size, 4 << 20);
        assert_eq!(config.server.max_connection_idle, None);
        assert_eq!(config.metrics.sample_interval, Duration::from_secs(5));
        assert_eq!(
            config.tls.cert,
            PathBuf::from("/etc/vitalsd/tls/server.crt")
        );
    }

    /// Drop-ins are applied after the main file, in lexical order.
    #[test]
    fn dropins_apply_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "vitalsd.toml",
            "[server]\nmax_connections = 10\n",
        );
        write(
            dir.path(),
            "vitalsd.d/20-b.toml",
            "[server]\nmax_connections = 30\n",
        );
        write(
            dir.path(),
            "vitalsd.d/10-a.toml",
            "[server]\nmax_connections = 20\nmax_concurrent_streams = 7\n",
        );
        write(dir.path(), "vitalsd.d/ignored.conf", "garbage");
        let config = Config::load(&Location::File(main)).unwrap();
        assert_eq!(config.server.max_connections, 30);
        assert_eq!(config.server.max_concurrent_streams, 7);
        assert_eq!(config.files.len(), 3);
    }

    /// An unknown key names the file it is in and the full key.
    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "vitalsd.toml", "");
        let dropin = write(
            dir.path(),
            "vitalsd.d/10-x.toml",
            "[server]\nlisten_addr = \"x\"\n",
        );
        let err = Config::load(&Location::File(main)).unwrap_err().to_string();
        assert!(err.starts_with(&dropin.display().to_string()), "{err}");
        assert!(err.contains("`server.listen_addr`"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    /// An invalid value names the file that set it, not the one loaded last.
    #[test]
    fn invalid_value_names_the_file_that_set_it() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "vitalsd.toml",
            "[server]\nlisten = [\"nonsense\"]\n",
        );
        write(
            dir.path(),
            "vitalsd.d/10-x.toml",
            "[log]\nlevel = \"debug\"\n",
        );
        let err = Config::load(&Location::File(main.clone()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}: `server.listen`: `nonsense` is not an address such as 127.0.0.1:50051 or [::]:50051",
                main.display()
            )
        );
    }

    /// A value of the wrong type is reported with its key.
    #[test]
    fn wrong_type_names_key() {
        let (_dir, err) = load_file("[server]\nmax_connections = \"many\"\n");
        let err = err.unwrap_err().to_string();
        assert!(err.contains("`server.max_connections`"), "{err}");
    }

    /// Broken TOML names the file.
    #[test]
    fn broken_toml_names_file() {
        let (dir, err) = load_file("[server\nlisten = 1");
        let err = err.unwrap_err().to_string();
        assert!(
            err.starts_with(&dir.path().join("vitalsd.toml").display().to_string()),
            "{err}"
        );
    }

    /// Bad durations and sizes are refused with the reason.
    #[test]
    fn durations_and_sizes_are_checked() {
        let (_d, err) = load_file("[server]\nhandshake_timeout = \"10\"\n");
        assert!(err.unwrap_err().to_string().contains("needs a unit"));
        let (_d, err) = load_file("[server]\nhandshake_timeout = \"0s\"\n");
        assert!(err.unwrap_err().to_string().contains("more than zero"));
        let (_d, err) = load_file("[server]\nmax_message_size = \"4 parsecs\"\n");
        assert!(err.unwrap_err().to_string().contains("not a unit"));
        let (_d, err) = load_file("[server]\ndrain_timeout = \"-5s\"\n");
        assert!(err.unwrap_err().to_string().contains("negative"));
        let (_d, config) = load_file("[server]\ndrain_timeout = \"1m30s\"\n");
        assert_eq!(
            config.unwrap().server.drain_timeout,
            Duration::from_secs(90)
        );
    }

    /// `[push]`: off by default; a URL with its auth is typed; credentials in the URL, a
    /// bad label name, mtls over http and a bearer token that is not a secret are refused
    /// with the key and the reason. ACL rules may name the `/metrics` page.
    #[test]
    fn push_and_page_settings_are_checked() {
        let (_d, config) = load_file("");
        assert_eq!(config.unwrap().push.url, None);
        let (_d, config) = load_file(
            "[push]\nurl = \"https://m.example/api/v1/write\"\nauth = \"mtls\"\nlabels = { site = \"b\" }\n",
        );
        let push = config.unwrap().push;
        assert_eq!(push.url.as_deref(), Some("https://m.example/api/v1/write"));
        assert!(
            matches!(&push.auth, PushAuth::Mtls { cert, .. } if cert.ends_with("server.crt")),
            "mtls defaults to the device certificate: {:?}",
            push.auth
        );
        for (text, key, reason) in [
            ("url = \"ftp://x/\"", "push.url", "not an http"),
            (
                "url = \"https://u:p@x/\"",
                "push.url",
                "credentials do not go in the URL",
            ),
            (
                "url = \"http://x/\"\nauth = \"mtls\"",
                "push.auth",
                "needs an https",
            ),
            (
                "auth = \"bearer\"\nbearer_token = \"tok\"",
                "push.bearer_token",
                "secret:NAME",
            ),
            (
                "labels = { \"__x\" = \"v\" }",
                "push.labels",
                "not a label name",
            ),
            (
                "labels = { \"9x\" = \"v\" }",
                "push.labels",
                "not a label name",
            ),
            ("interval = \"100ms\"", "push.interval", "at least 500ms"),
            ("auth = \"kerberos\"", "push.auth", "not one of"),
        ] {
            let (_d, err) = load_file(&format!("[push]\n{text}\n"));
            let err = err.unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(reason), "{text}: {err}");
        }
        let (_d, config) =
            load_file("[[auth.rules]]\nidentities = [\"spiffe://p\"]\nmethods = [\"/metrics\"]\n");
        assert_eq!(config.unwrap().auth.rules[0].methods, ["/metrics"]);
        let (_d, err) = load_file("[[auth.rules]]\nidentities = [\"x\"]\nmethods = [\"/debug\"]\n");
        assert!(err.unwrap_err().to_string().contains("/metrics"));
    }

    /// `[tls.issue]`: defaults filled in, tls.cert and tls.key pointed at the state file,
    /// and a missing or contradictory key refused with its name.
    #[test]
    fn issue_section_is_checked() {
        let base = "[tls.issue]\naddr = \"https://bao:8200/\"\nca_cert = \"/ca.pem\"\nrole = \"device\"\ncommon_name = \"gw\"\nstate_dir = \"/var/lib/x\"\n";
        let (_d, config) = load_file(&format!(
            "{base}auth = \"cert\"\nuri_sans = [\"spiffe://f/gw\"]\nip_sans = [\"10.0.0.1\"]\n"
        ));
        let config = config.unwrap();
        let issue = config.tls.issue.as_ref().unwrap();
        assert_eq!(issue.addr, "https://bao:8200");
        assert_eq!(issue.mount, "pki");
        assert_eq!(issue.file(), PathBuf::from("/var/lib/x/issued.pem"));
        assert_eq!(config.tls.cert, issue.file());
        assert_eq!(config.tls.key, Material::Path(issue.file()));
        assert!(matches!(&issue.auth, VaultAuth::Cert { mount, .. } if mount == "cert"));
        assert_eq!(issue.fallback, None);
        // A P-256 key, and the certificate must chain to the client CA, unless told.
        assert_eq!(issue.key_type, crate::x509::KeyType::P256);
        assert_eq!(issue.issuer_ca, config.tls.client_ca);
        let (_d, config) = load_file(&format!(
            "{base}auth = \"cert\"\nkey_type = \"ed25519\"\nissuer_ca = \"/pki-root.pem\"\n"
        ));
        let config = config.unwrap();
        let issue = config.tls.issue.as_ref().unwrap();
        assert_eq!(issue.key_type, crate::x509::KeyType::Ed25519);
        assert_eq!(issue.issuer_ca, PathBuf::from("/pki-root.pem"));
        let approle = "[[secrets.sources]]\nkind = \"file\"\ndir = \"/s\"\n";
        let (_d, config) = load_file(&format!(
            "{base}auth = \"cert\"\nfallback = \"approle\"\nrole_id = \"secret:r\"\nsecret_id = \"secret:s\"\n{approle}"
        ));
        let config = config.unwrap();
        assert!(
            matches!(&config.tls.issue.as_ref().unwrap().fallback, Some(VaultAuth::AppRole { mount, .. }) if mount == "approle")
        );
        assert_eq!(config.secret_names(), ["r", "s"]);
        for (extra, key, reason) in [
            ("", "tls.issue.auth", "is required"),
            (
                "auth = \"kerberos\"",
                "tls.issue.auth",
                "not an auth method",
            ),
            (
                "auth = \"cert\"\nfallback = \"token\"",
                "tls.issue.fallback",
                "not a fallback",
            ),
            (
                "auth = \"cert\"\nfallback = \"approle\"",
                "tls.issue.role_id",
                "required",
            ),
            (
                "auth = \"token\"\ntoken = \"plain\"",
                "tls.issue.token",
                "secret:NAME",
            ),
            (
                "auth = \"token\"\ntoken = \"secret:t\"",
                "tls.issue",
                "credentials or file source",
            ),
            (
                "auth = \"cert\"\nip_sans = [\"nope\"]",
                "tls.issue.ip_sans",
                "not an IP",
            ),
            (
                "auth = \"cert\"\nttl = \"60s\"\nrenew_before = \"90s\"",
                "tls.issue.renew_before",
                "not shorter",
            ),
            (
                "auth = \"cert\"\nrole_id = \"secret:r\"",
                "tls.issue.role_id",
                "does not apply",
            ),
            (
                "auth = \"cert\"\nkey_type = \"rsa\"",
                "tls.issue.key_type",
                "p256, p384 or ed25519",
            ),
        ] {
            let (_d, err) = load_file(&format!("{base}{extra}\n"));
            let err = err.unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(reason), "{extra}: {err}");
        }
        let (_d, err) = load_file("[tls.issue]\nauth = \"cert\"\n");
        assert!(err.unwrap_err().to_string().contains("tls.issue.addr"));
    }

    /// A missing `--config` file is an error, while the default location may be absent.
    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(&Location::File(dir.path().join("nope.toml"))).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
    }

    /// The reference config documents every key with its default value: loading it gives
    /// exactly what an empty file gives, and it leaves no key out.
    #[test]
    fn reference_config_matches_defaults() {
        let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vitalsd.toml");
        let text = fs::read_to_string(&reference).unwrap();
        let defaults =
            toml::to_string(&Config::load_raw(&Location::Dev("x".into())).unwrap().0).unwrap();
        let defaults: toml::Table = defaults.parse().unwrap();
        let documented: toml::Table = text.parse().unwrap();
        for (section, keys) in &defaults {
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    documented[section].as_table().unwrap().contains_key(key),
                    "config/vitalsd.toml does not document `{section}.{key}`"
                );
            }
        }
        let (_d, a) = load_file(&text);
        let (_d, b) = load_file("");
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        a.files.clear();
        b.files.clear();
        assert_eq!(a, b);
    }

    /// The fuzzer's finds (fuzz/regressions/config_parse): quoted keys that look like paths
    /// are keys, unknown sections name their file, and every error is one line.
    #[test]
    fn fuzz_regressions() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/config_parse");
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap();
            let err = Config::parse("f.toml", &text).unwrap_err().to_string();
            assert!(err.starts_with("f.toml: "), "{}: {err}", path.display());
            assert!(!err.contains('\n'), "{}: {err}", path.display());
        }
    }

    /// A text parses the same as a file with that content.
    #[test]
    fn parse_text_matches_files() {
        let text = "[server]\nmax_connections = 9\n";
        let (_d, from_file) = load_file(text);
        let mut from_file = from_file.unwrap();
        from_file.files.clear();
        assert_eq!(Config::parse("t", text).unwrap(), from_file);
        let err = Config::parse("t.toml", "[server]\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err.split(':').take(2).collect::<Vec<_>>(),
            ["t.toml", " `server.bogus`"]
        );
    }

    /// Dev mode points TLS at the dev PKI directory.
    #[test]
    fn dev_mode_uses_dev_pki() {
        let config = Config::load(&Location::Dev(PathBuf::from("certs/dev"))).unwrap();
        assert_eq!(
            config.tls.key,
            Material::Path(PathBuf::from("certs/dev/server.key"))
        );
        assert!(config.files.is_empty());
    }

    /// A bad log filter is refused at load time rather than at reload.
    #[test]
    fn log_level_is_validated() {
        let (_d, err) = load_file("[log]\nlevel = \"loud=?=\"\n");
        assert!(err.unwrap_err().to_string().contains("`log.level`"));
        let (_d, err) = load_file("[log]\nformat = \"xml\"\n");
        assert!(err.unwrap_err().to_string().contains("`log.format`"));
    }
}

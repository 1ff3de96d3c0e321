//! Configuration: the files pushed onto the device, read in layers, validated whole.
//!
//! Layers, later ones winning: built-in defaults (the `default_*` functions below), the main
//! file (`/etc/vitalsd/vitalsd.toml` or `--config FILE`), `vitalsd.d/*.toml` beside it in
//! lexical order, then `VITALSD_*` environment variables (`VITALSD_SERVER__LISTEN=a,b`).
//!
//! Two stages, as ripgrep does with its arguments: [`RawConfig`] is what serde reads (strings
//! for durations and addresses, unknown keys refused), [`Config`] is the validated, typed
//! value the daemon runs on. Every error names the file (or "the environment"), the key and
//! the reason.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub mod units;

/// Where the daemon looks for its config when not told otherwise.
pub const DEFAULT_PATH: &str = "/etc/vitalsd/vitalsd.toml";
/// The drop-in directory, beside the main file.
pub const DROPIN_DIR: &str = "vitalsd.d";
/// Prefix of environment overrides; `__` separates key levels.
pub const ENV_PREFIX: &str = "VITALSD";
/// Keys whose environment value is a comma-separated list.
const ENV_LIST_KEYS: &[&str] = &[
    "server.listen",
    "health.plaintext_listen",
    "health.disk_paths",
];

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
    /// The files that were read, in order, for the startup log line.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub max_calls: usize,
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
    pub drain_timeout: Duration,
    pub worker_threads: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: Material,
    pub client_ca: PathBuf,
}

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
    pub plaintext_listen: Vec<SocketAddr>,
    pub disk_paths: Vec<PathBuf>,
    pub min_disk_free_percent: f64,
    pub min_memory_available_percent: f64,
    pub max_temperature_celsius: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub sample_interval: Duration,
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

// ---------------------------------------------------------------------------------------------
// Raw: what serde reads. Every field documented; defaults come from named functions.

/// The config file's shape. `config/vitalsd.toml` documents every key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub tls: RawTls,
    pub health: RawHealth,
    pub metrics: RawMetrics,
    pub log: RawLog,
    pub secrets: RawSecrets,
    pub auth: RawAuth,
    pub echo: RawEcho,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Addresses of the mTLS gRPC port.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Open connections (TLS handshakes included) above which new ones are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// Of those, how many may be in their TLS handshake at once: unfinished handshakes
    /// cannot take the slots of real clients.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: u64,
    /// Calls in flight across all connections; more get RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_calls")]
    pub max_calls: u64,
    /// A connection that has not finished its TLS handshake by then is closed.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: String,
    /// TCP keepalive idle time ("0s" turns it off).
    #[serde(default = "default_tcp_keepalive")]
    pub tcp_keepalive: String,
    /// HTTP/2 PING sent after this much silence on a connection ("0s" turns it off).
    #[serde(default = "default_http2_keepalive_interval")]
    pub http2_keepalive_interval: String,
    /// A PING not answered within this closes the connection.
    #[serde(default = "default_http2_keepalive_timeout")]
    pub http2_keepalive_timeout: String,
    /// Concurrent streams (RPCs) per connection.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u64,
    /// Largest request or response message ("4MiB", "65536").
    #[serde(default = "default_max_message_size")]
    pub max_message_size: String,
    /// Largest request header list.
    #[serde(default = "default_max_header_list_size")]
    pub max_header_list_size: String,
    /// Cap on a unary call's deadline, also applied when the client sends none.
    #[serde(default = "default_max_deadline")]
    pub max_deadline: String,
    /// GOAWAY a connection with no RPC for this long ("0s": never).
    #[serde(default = "default_max_connection_idle")]
    pub max_connection_idle: String,
    /// GOAWAY a connection this old, ±10% jitter ("0s": never).
    #[serde(default = "default_max_connection_age")]
    pub max_connection_age: String,
    /// After an age GOAWAY, in-flight RPCs get this long before the connection is closed.
    #[serde(default = "default_max_connection_age_grace")]
    pub max_connection_age_grace: String,
    /// On SIGTERM, in-flight RPCs get this long to finish.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: String,
    /// Runtime worker threads; 0 means one per CPU.
    #[serde(default)]
    pub worker_threads: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain of the server, leaf first.
    #[serde(default = "default_tls_cert")]
    pub cert: String,
    /// PEM private key of the server, a path (refused when readable by group or others) or
    /// `secret:NAME` (PEM text pulled from a secret source).
    #[serde(default = "default_tls_key")]
    pub key: String,
    /// PEM bundle of the CAs that issue client certificates.
    #[serde(default = "default_tls_client_ca")]
    pub client_ca: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Plaintext listeners that serve only grpc.health.v1 (for probes without mTLS). Empty: none.
    #[serde(default)]
    pub plaintext_listen: Vec<String>,
    /// Filesystems whose free space is checked.
    #[serde(default = "default_disk_paths")]
    pub disk_paths: Vec<String>,
    /// Overall health is NOT_SERVING below this much free space, in percent (0 turns it off).
    #[serde(default = "default_min_disk_free_percent")]
    pub min_disk_free_percent: f64,
    /// Overall health is NOT_SERVING below this much available memory, in percent (0: off).
    #[serde(default = "default_min_memory_available_percent")]
    pub min_memory_available_percent: f64,
    /// Overall health is NOT_SERVING when any sensor reads above this (0: off).
    #[serde(default = "default_max_temperature_celsius")]
    pub max_temperature_celsius: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// How often the sampler reads /proc and /sys; also the shortest Watch interval.
    #[serde(default = "default_sample_interval")]
    pub sample_interval: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    /// How long startup may wait for every referenced secret, retries included.
    #[serde(default = "default_secrets_startup_timeout")]
    pub startup_timeout: String,
    /// Where secrets come from, tried in order.
    #[serde(default)]
    pub sources: Vec<RawSource>,
}

/// One `[[secrets.sources]]` entry. Which keys apply depends on `kind`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// credentials, file or vault.
    pub kind: String,
    /// file: the directory holding one file per secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// vault: `https://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// vault: the KV v2 mount (default `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// vault: the path of the entry under the mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// vault: the namespace (Vault Enterprise, OpenBao namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// vault: PEM bundle of the CA that issued the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// vault: timeout of each request (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// vault: token, approle or cert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// vault: where the auth method is mounted (default `approle` or `cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mount: Option<String>,
    /// vault, token auth: `secret:NAME` of the token (from credentials or a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// vault, approle auth: `secret:NAME` of the role id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// vault, approle auth: `secret:NAME` of the secret id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// vault, cert auth: the role to log in as (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_role: Option<String>,
    /// vault, cert auth: the certificate to log in with (default: tls.cert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// vault, cert auth: its key, a path or `secret:NAME` from a local source (default: tls.key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// vault: secret name = field of the KV entry, e.g. `{ tls_key = "tls_key_pem" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEcho {
    /// Honour the echo request's `panic` knob (tests exception handling); keep off.
    #[serde(default)]
    pub allow_panic: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Methods any verified client may call.
    #[serde(default = "default_auth_public")]
    pub public: Vec<String>,
    /// Methods whose every call is audit-logged, not only denials.
    #[serde(default)]
    pub audit: Vec<String>,
    /// Grants: identities to methods.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Methods that also need a bearer token.
    #[serde(default)]
    pub bearer: Vec<RawBearer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Exact identities, `prefix*`, or `*`.
    pub identities: Vec<String>,
    /// `pkg.Service/Method`, `pkg.Service/*` or `*`.
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBearer {
    pub methods: Vec<String>,
    /// opaque or jwt.
    pub kind: String,
    /// opaque: `secret:NAME` of each accepted token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<String>>,
    /// jwt: HS256 or ES256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// jwt: `secret:NAME` of the HMAC key (HS256) or PEM public key (ES256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// jwt: the required `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// jwt: a required member of `aud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// jwt: clock skew allowed on `exp` and `nbf` (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Level or filter directive: error, warn, info, debug, trace, or `info,vitals=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// auto, text, json or journald.
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// One line per call with method, peer, status code and latency.
    #[serde(default)]
    pub access: bool,
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:50051".into()]
}
fn default_max_connections() -> u64 {
    1024
}
fn default_max_handshakes() -> u64 {
    64
}
fn default_max_calls() -> u64 {
    2048
}
fn default_handshake_timeout() -> String {
    "5s".into()
}
fn default_tcp_keepalive() -> String {
    "60s".into()
}
fn default_http2_keepalive_interval() -> String {
    "30s".into()
}
fn default_http2_keepalive_timeout() -> String {
    "20s".into()
}
fn default_max_concurrent_streams() -> u64 {
    128
}
fn default_max_message_size() -> String {
    "4MiB".into()
}
fn default_max_header_list_size() -> String {
    "16KiB".into()
}
fn default_max_deadline() -> String {
    "5m".into()
}
fn default_max_connection_idle() -> String {
    "0s".into()
}
fn default_max_connection_age() -> String {
    "0s".into()
}
fn default_max_connection_age_grace() -> String {
    "30s".into()
}
fn default_drain_timeout() -> String {
    "10s".into()
}
fn default_tls_cert() -> String {
    "/etc/vitalsd/tls/server.crt".into()
}
fn default_tls_key() -> String {
    "/etc/vitalsd/tls/server.key".into()
}
fn default_tls_client_ca() -> String {
    "/etc/vitalsd/tls/ca.crt".into()
}
fn default_disk_paths() -> Vec<String> {
    vec!["/".into()]
}
fn default_min_disk_free_percent() -> f64 {
    2.0
}
fn default_min_memory_available_percent() -> f64 {
    2.0
}
fn default_max_temperature_celsius() -> f64 {
    0.0
}
fn default_sample_interval() -> String {
    "5s".into()
}
fn default_auth_public() -> Vec<String> {
    vec![
        "grpc.health.v1.Health/*".into(),
        "grpc.reflection.v1.ServerReflection/*".into(),
        "grpc.reflection.v1alpha.ServerReflection/*".into(),
    ]
}
fn default_secrets_startup_timeout() -> String {
    "60s".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_log_format() -> LogFormat {
    LogFormat::Auto
}

/// The sections of the config; each is given as an empty table under every layer, so that
/// serde fills an absent section from its fields' defaults (one deserializer, no Default
/// impls to keep in step).
const SECTIONS: [&str; 8] = [
    "server", "tls", "health", "metrics", "log", "secrets", "auth", "echo",
];

// ---------------------------------------------------------------------------------------------
// Loading.

impl Config {
    /// Reads every layer for `location`, then validates the result.
    pub fn load(location: &Location) -> Result<Config, Error> {
        let (layers, files) = Layers::read(location)?;
        let raw = layers.raw()?;
        let mut config = layers.validate(raw, files)?;
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
        let mut layers = Layers::defaults();
        let file = TomlFile::parse(origin.to_string(), text)?;
        for (key, value) in file.map(&file.table) {
            layers.merge(key, value);
        }
        let raw = layers.raw()?;
        layers.validate(raw, Vec::new())
    }

    /// Reads every layer and returns the merged raw config without validating it
    /// (for `--check-config`, after [`Config::load`] has succeeded).
    pub fn load_raw(location: &Location) -> Result<RawConfig, Error> {
        Layers::read(location)?.0.raw()
    }
}

/// The merged layers, kept so that an error can say which layer a key came from.
struct Layers(config::Config);

impl Layers {
    fn read(location: &Location) -> Result<(Layers, Vec<PathBuf>), Error> {
        let mut layers = Layers::defaults();
        let mut files = Vec::new();
        match location {
            Location::Dev(dir) => {
                let mut tls = config::Map::new();
                for (key, file) in [
                    ("cert", "server.crt"),
                    ("key", "server.key"),
                    ("client_ca", "ca.crt"),
                ] {
                    let path = dir.join(file).display().to_string();
                    tls.insert(key.to_string(), config::Value::new(None, path));
                }
                layers.merge("tls".into(), config::Value::new(None, tls));
            }
            Location::Default | Location::File(_) => {
                let (main, required) = match location {
                    Location::File(path) => (path.clone(), true),
                    _ => (PathBuf::from(DEFAULT_PATH), false),
                };
                if required || main.exists() {
                    files.push(main.clone());
                }
                let dropins = main.parent().unwrap_or(Path::new(".")).join(DROPIN_DIR);
                files.extend(dropin_files(&dropins)?);
                if required && !main.is_file() {
                    return Err(Error::Parse {
                        origin: main.display().to_string(),
                        reason: "no such file".into(),
                    });
                }
            }
        }
        for file in &files {
            let file = TomlFile::read(file)?;
            for (key, value) in file.map(&file.table) {
                layers.merge(key, value);
            }
        }
        let mut env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .try_parsing(true);
        for key in ENV_LIST_KEYS {
            env = env.with_list_parse_key(key);
        }
        let from_env = config::Source::collect(&env).map_err(parse_error)?;
        for (path, value) in from_env {
            // `server.listen` from VITALSD_SERVER__LISTEN: nest by dots, nothing else.
            let origin = value.origin().map(str::to_string);
            let mut parts: Vec<&str> = path.split('.').collect();
            let last = parts.pop().unwrap_or_default().to_string();
            let mut nested = value;
            let mut key = last;
            while let Some(parent) = parts.pop() {
                let mut table = config::Map::new();
                table.insert(key, nested);
                nested = config::Value::new(origin.as_ref(), table);
                key = parent.to_string();
            }
            layers.merge(key, nested);
        }
        Ok((layers, files))
    }

    /// Built-in defaults: every section as an empty table, so serde fills an absent section
    /// from its fields' defaults.
    fn defaults() -> Layers {
        let mut root = config::Map::new();
        for section in SECTIONS {
            root.insert(
                section.to_string(),
                config::Value::new(None, config::Map::<String, config::Value>::new()),
            );
        }
        let mut merged = config::Config::default();
        merged.cache = config::Value::new(None, root);
        Layers(merged)
    }

    /// Puts a layer's top-level key in. Keys are keys: the layers are merged here rather
    /// than by the config crate's builder, which reads every top-level key as a path
    /// expression (a quoted `"x[99999999999]"` would grow an array to that size).
    fn merge(&mut self, key: String, value: config::Value) {
        let config::ValueKind::Table(root) = &mut self.0.cache.kind else {
            unreachable!("the root is a table from defaults()")
        };
        merge(root, key, value);
    }

    /// Deserializes the merged layers, naming the key and its layer on error.
    fn raw(&self) -> Result<RawConfig, Error> {
        serde_path_to_error::deserialize(self.0.clone()).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let reason = match &inner {
                config::ConfigError::Message(m) => m.clone(),
                other => other.to_string(),
            };
            let reason = reason
                .split(" for key `")
                .next()
                .unwrap_or_default()
                .to_string();
            self.invalid(&path, reason)
        })
    }

    /// The layer a key's value came from: a file path, "the environment" or "built-in defaults".
    fn origin(&self, key: &str) -> String {
        let mut value = &self.0.cache;
        let parts: Vec<&str> = key.split('.').collect();
        let mut i = 0;
        'walk: while i < parts.len() {
            let config::ValueKind::Table(table) = &value.kind else {
                break;
            };
            // The longest literal key first (a file may say "a.b" = 1 or "x[1]" = 1) ...
            for j in (i + 1..=parts.len()).rev() {
                if let Some(v) = table.get(&parts[i..j].join(".")) {
                    value = v;
                    i = j;
                    continue 'walk;
                }
            }
            // ... then `name[index]`.
            let Some((name, index)) = parts[i].strip_suffix(']').and_then(|p| p.split_once('['))
            else {
                break;
            };
            let Some(v) = table.get(name) else { break };
            value = v;
            if let (Ok(n), config::ValueKind::Array(items)) = (index.parse::<usize>(), &value.kind)
                && let Some(item) = items.get(n)
            {
                value = item;
            }
            i += 1;
        }
        value.origin().unwrap_or("built-in defaults").to_string()
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            origin: self.origin(key),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn validate(&self, raw: RawConfig, files: Vec<PathBuf>) -> Result<Config, Error> {
        let v = Validator { layers: self };
        let s = &raw.server;
        let server = Server {
            listen: v.addrs("server.listen", &s.listen)?,
            max_connections: v.range("server.max_connections", s.max_connections, 1, 1 << 20)?
                as usize,
            max_handshakes: v.range("server.max_handshakes", s.max_handshakes, 1, 1 << 20)?
                as usize,
            max_calls: v.range("server.max_calls", s.max_calls, 1, 1 << 24)? as usize,
            handshake_timeout: v
                .nonzero_duration("server.handshake_timeout", &s.handshake_timeout)?,
            tcp_keepalive: v.optional_duration("server.tcp_keepalive", &s.tcp_keepalive)?,
            http2_keepalive_interval: v.optional_duration(
                "server.http2_keepalive_interval",
                &s.http2_keepalive_interval,
            )?,
            http2_keepalive_timeout: v
                .nonzero_duration("server.http2_keepalive_timeout", &s.http2_keepalive_timeout)?,
            max_concurrent_streams: v.range(
                "server.max_concurrent_streams",
                s.max_concurrent_streams,
                1,
                65_536,
            )? as u32,
            max_message_size: v.size(
                "server.max_message_size",
                &s.max_message_size,
                1024,
                1 << 30,
            )? as usize,
            max_header_list_size: v.size(
                "server.max_header_list_size",
                &s.max_header_list_size,
                1024,
                1 << 20,
            )? as u32,
            max_deadline: v.nonzero_duration("server.max_deadline", &s.max_deadline)?,
            max_connection_idle: v
                .optional_duration("server.max_connection_idle", &s.max_connection_idle)?,
            max_connection_age: v
                .optional_duration("server.max_connection_age", &s.max_connection_age)?,
            max_connection_age_grace: v.duration(
                "server.max_connection_age_grace",
                &s.max_connection_age_grace,
            )?,
            drain_timeout: v.duration("server.drain_timeout", &s.drain_timeout)?,
            worker_threads: v.range("server.worker_threads", s.worker_threads, 0, 256)? as usize,
        };
        if server.listen.is_empty() {
            return Err(self.invalid("server.listen", "at least one address is needed"));
        }
        let tls = Tls {
            cert: v.path("tls.cert", &raw.tls.cert)?,
            key: v.material("tls.key", &raw.tls.key)?,
            client_ca: v.path("tls.client_ca", &raw.tls.client_ca)?,
        };
        let secrets = Secrets {
            startup_timeout: v
                .nonzero_duration("secrets.startup_timeout", &raw.secrets.startup_timeout)?,
            sources: raw
                .secrets
                .sources
                .iter()
                .enumerate()
                .map(|(i, source)| v.source(&format!("secrets.sources[{i}]"), source))
                .collect::<Result<_, _>>()?,
        };
        if let Material::Secret(name) = &tls.key
            && secrets.sources.is_empty()
        {
            return Err(self.invalid(
                "tls.key",
                format!("refers to secret `{name}` but no [[secrets.sources]] are configured"),
            ));
        }
        for (i, source) in secrets.sources.iter().enumerate() {
            let key = format!("secrets.sources[{i}]");
            let Source::Vault(vault) = source else {
                continue;
            };
            if let VaultAuth::Cert { key: login_key, .. } = &vault.auth
                && let Material::Secret(name) = login_key.as_ref().unwrap_or(&tls.key)
                && vault.fields.contains_key(name)
            {
                return Err(self.invalid(
                    &key,
                    format!("cert auth logs in with the key `{name}`, which cannot itself come from this source; set client_cert and client_key"),
                ));
            }
            let own = match &vault.auth {
                VaultAuth::Token { token } => vec![token],
                VaultAuth::AppRole {
                    role_id, secret_id, ..
                } => vec![role_id, secret_id],
                VaultAuth::Cert {
                    key: Some(Material::Secret(name)),
                    ..
                } => vec![name],
                VaultAuth::Cert { .. } => vec![],
            };
            let local = secrets
                .sources
                .iter()
                .any(|s| matches!(s, Source::Credentials | Source::File { .. }));
            if !own.is_empty() && !local {
                return Err(self.invalid(
                    &key,
                    "the Vault login secrets need a credentials or file source to come from",
                ));
            }
        }
        let h = &raw.health;
        let health = Health {
            plaintext_listen: v.addrs("health.plaintext_listen", &h.plaintext_listen)?,
            disk_paths: h
                .disk_paths
                .iter()
                .map(|p| v.path("health.disk_paths", p))
                .collect::<Result<_, _>>()?,
            min_disk_free_percent: v
                .percent("health.min_disk_free_percent", h.min_disk_free_percent)?,
            min_memory_available_percent: v.percent(
                "health.min_memory_available_percent",
                h.min_memory_available_percent,
            )?,
            max_temperature_celsius: match h.max_temperature_celsius {
                0.0 => None,
                t if t.is_finite() && t > 0.0 && t < 200.0 => Some(t),
                t => {
                    return Err(self.invalid(
                        "health.max_temperature_celsius",
                        format!("{t} is not between 0 and 200"),
                    ));
                }
            },
        };
        let sample_interval =
            v.duration("metrics.sample_interval", &raw.metrics.sample_interval)?;
        if sample_interval < Duration::from_millis(500) {
            return Err(self.invalid("metrics.sample_interval", "must be at least 500ms"));
        }
        let log = Log {
            level: v.log_level("log.level", &raw.log.level)?,
            format: raw.log.format,
            access: raw.log.access,
        };
        let auth = v.auth(&raw.auth)?;
        if !auth.bearer.is_empty() && secrets.sources.is_empty() {
            return Err(self.invalid(
                "auth.bearer",
                "refers to secrets but no [[secrets.sources]] are configured",
            ));
        }
        Ok(Config {
            server,
            tls,
            health,
            metrics: Metrics { sample_interval },
            log,
            secrets,
            auth,
            echo: Echo {
                allow_panic: raw.echo.allow_panic,
            },
            files,
        })
    }
}

/// The `*.toml` files of a drop-in directory, in lexical order; none when it does not exist.
fn dropin_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::DropinDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| Error::DropinDir {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One TOML file as a config layer, every value remembering the file's path as its origin.
#[derive(Debug, Clone)]
struct TomlFile {
    origin: String,
    table: toml::Table,
}

impl TomlFile {
    fn read(path: &Path) -> Result<TomlFile, Error> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Parse {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        TomlFile::parse(origin, &text)
    }

    fn parse(origin: String, text: &str) -> Result<TomlFile, Error> {
        let table = text.parse::<toml::Table>().map_err(|e| Error::Parse {
            origin: origin.clone(),
            reason: one_line_toml_error(text, &e),
        })?;
        Ok(TomlFile { origin, table })
    }

    fn value(&self, value: &toml::Value) -> config::Value {
        let origin = Some(&self.origin);
        match value {
            toml::Value::String(s) => config::Value::new(origin, s.as_str()),
            toml::Value::Integer(i) => config::Value::new(origin, *i),
            toml::Value::Float(f) => config::Value::new(origin, *f),
            toml::Value::Boolean(b) => config::Value::new(origin, *b),
            toml::Value::Datetime(d) => config::Value::new(origin, d.to_string()),
            toml::Value::Array(items) => config::Value::new(
                origin,
                items.iter().map(|v| self.value(v)).collect::<Vec<_>>(),
            ),
            toml::Value::Table(table) => config::Value::new(origin, self.map(table)),
        }
    }

    fn map(&self, table: &toml::Table) -> config::Map<String, config::Value> {
        table
            .iter()
            .map(|(k, v)| (k.clone(), self.value(v)))
            .collect()
    }
}

/// Puts `value` under `key`: tables merge key by key, anything else replaces what was there.
fn merge(table: &mut config::Map<String, config::Value>, key: String, value: config::Value) {
    let origin = value.origin().map(str::to_string);
    match (table.get_mut(&key), value.kind) {
        (Some(existing), config::ValueKind::Table(incoming))
            if matches!(existing.kind, config::ValueKind::Table(_)) =>
        {
            let config::ValueKind::Table(target) = &mut existing.kind else {
                unreachable!("matched a table")
            };
            for (k, v) in incoming {
                merge(target, k, v);
            }
        }
        (_, kind) => {
            table.insert(key, config::Value::new(origin.as_ref(), kind));
        }
    }
}

/// "invalid TOML at line 3, column 8: unclosed table" from toml's multi-line report.
fn one_line_toml_error(text: &str, err: &toml::de::Error) -> String {
    let what = err.message().trim();
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("invalid TOML at line {line}, column {column}: {what}")
        }
        None => format!("invalid TOML: {what}"),
    }
}

fn parse_error(err: config::ConfigError) -> Error {
    match err {
        config::ConfigError::FileParse { uri, cause } => Error::Parse {
            origin: uri.unwrap_or_else(|| "a config file".into()),
            reason: cause.to_string().trim().replace('\n', " "),
        },
        config::ConfigError::Foreign(cause) => Error::Parse {
            origin: "a config file".into(),
            reason: cause.to_string(),
        },
        other => Error::Parse {
            origin: "config".into(),
            reason: other.to_string(),
        },
    }
}

struct Validator<'a> {
    layers: &'a Layers,
}

impl Validator<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        self.layers.invalid(key, reason)
    }

    fn addrs(&self, key: &str, values: &[String]) -> Result<Vec<SocketAddr>, Error> {
        values
            .iter()
            .map(|a| {
                a.trim().parse().map_err(|_| {
                    self.err(
                        key,
                        format!("`{a}` is not an address such as 127.0.0.1:50051 or [::]:50051"),
                    )
                })
            })
            .collect()
    }

    fn duration(&self, key: &str, value: &str) -> Result<Duration, Error> {
        units::parse_duration(value).map_err(|reason| self.err(key, reason))
    }

    fn nonzero_duration(&self, key: &str, value: &str) -> Result<Duration, Error> {
        match self.duration(key, value)? {
            d if d.is_zero() => Err(self.err(key, "must be more than zero")),
            d => Ok(d),
        }
    }

    /// A duration where zero means "off".
    fn optional_duration(&self, key: &str, value: &str) -> Result<Option<Duration>, Error> {
        Ok(Some(self.duration(key, value)?).filter(|d| !d.is_zero()))
    }

    fn size(&self, key: &str, value: &str, min: u64, max: u64) -> Result<u64, Error> {
        let n = units::parse_size(value).map_err(|reason| self.err(key, reason))?;
        if n < min || n > max {
            return Err(self.err(key, format!("{n} bytes is outside {min}..={max}")));
        }
        Ok(n)
    }

    fn range(&self, key: &str, n: u64, min: u64, max: u64) -> Result<u64, Error> {
        if n < min || n > max {
            return Err(self.err(key, format!("{n} is outside {min}..={max}")));
        }
        Ok(n)
    }

    fn percent(&self, key: &str, p: f64) -> Result<f64, Error> {
        if !(0.0..100.0).contains(&p) {
            return Err(self.err(key, format!("{p} is not a percentage below 100")));
        }
        Ok(p)
    }

    fn path(&self, key: &str, value: &str) -> Result<PathBuf, Error> {
        if value.trim().is_empty() {
            return Err(self.err(key, "a path is needed"));
        }
        Ok(PathBuf::from(value))
    }

    /// A path, or `secret:NAME`.
    fn material(&self, key: &str, value: &str) -> Result<Material, Error> {
        match value.strip_prefix(SECRET_PREFIX) {
            Some(name) => Ok(Material::Secret(self.secret_name(key, name)?)),
            None => Ok(Material::Path(self.path(key, value)?)),
        }
    }

    fn secret_name(&self, key: &str, name: &str) -> Result<String, Error> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            && !name.starts_with('.');
        if !ok {
            return Err(self.err(
                key,
                format!("`{name}` is not a secret name (letters, digits, _ - . up to 128)"),
            ));
        }
        Ok(name.to_string())
    }

    /// A `secret:NAME` reference, required (a literal would put the secret in a config file).
    fn reference(&self, key: &str, value: Option<&String>) -> Result<String, Error> {
        let value = value.ok_or_else(|| self.err(key, "is required for this auth method"))?;
        let name = value.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            self.err(
                key,
                "must be a `secret:NAME` reference, not the secret itself",
            )
        })?;
        self.secret_name(key, name)
    }

    fn source(&self, key: &str, raw: &RawSource) -> Result<Source, Error> {
        let field = |name: &str| format!("{key}.{name}");
        let given: Vec<&str> = [
            ("dir", raw.dir.is_some()),
            ("addr", raw.addr.is_some()),
            ("mount", raw.mount.is_some()),
            ("path", raw.path.is_some()),
            ("namespace", raw.namespace.is_some()),
            ("ca_cert", raw.ca_cert.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("auth", raw.auth.is_some()),
            ("auth_mount", raw.auth_mount.is_some()),
            ("token", raw.token.is_some()),
            ("role_id", raw.role_id.is_some()),
            ("secret_id", raw.secret_id.is_some()),
            ("cert_role", raw.cert_role.is_some()),
            ("client_cert", raw.client_cert.is_some()),
            ("client_key", raw.client_key.is_some()),
            ("fields", raw.fields.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        let only = |allowed: &[&str]| match given.iter().find(|g| !allowed.contains(g)) {
            Some(extra) => Err(self.err(
                &field(extra),
                format!("does not apply to a `{}` source", raw.kind),
            )),
            None => Ok(()),
        };
        match raw.kind.as_str() {
            "credentials" => {
                only(&[])?;
                Ok(Source::Credentials)
            }
            "file" => {
                only(&["dir"])?;
                let dir = raw
                    .dir
                    .as_deref()
                    .ok_or_else(|| self.err(&field("dir"), "is required"))?;
                Ok(Source::File {
                    dir: self.path(&field("dir"), dir)?,
                })
            }
            "vault" => {
                let addr = raw
                    .addr
                    .clone()
                    .ok_or_else(|| self.err(&field("addr"), "is required"))?;
                let addr = addr.trim_end_matches('/').to_string();
                let host = addr.strip_prefix("https://").ok_or_else(|| {
                    self.err(
                        &field("addr"),
                        format!("`{addr}` must be an https:// address"),
                    )
                })?;
                if host.is_empty() || host.contains('/') {
                    return Err(self.err(
                        &field("addr"),
                        format!("`{addr}` must be https://host[:port]"),
                    ));
                }
                let path = raw
                    .path
                    .clone()
                    .ok_or_else(|| self.err(&field("path"), "is required"))?;
                let ca_cert = raw.ca_cert.as_deref().ok_or_else(|| {
                    self.err(
                        &field("ca_cert"),
                        "is required: the CA of the server's certificate",
                    )
                })?;
                let fields = raw.fields.clone().unwrap_or_default();
                if fields.is_empty() {
                    return Err(self.err(&field("fields"), "maps no secret names to fields"));
                }
                for name in fields.keys() {
                    self.secret_name(&field("fields"), name)?;
                }
                let auth = match raw.auth.as_deref().unwrap_or("token") {
                    "token" => {
                        only(&[
                            "addr",
                            "mount",
                            "path",
                            "namespace",
                            "ca_cert",
                            "timeout",
                            "auth",
                            "token",
                            "fields",
                        ])?;
                        VaultAuth::Token {
                            token: self.reference(&field("token"), raw.token.as_ref())?,
                        }
                    }
                    "approle" => {
                        only(&[
                            "addr",
                            "mount",
                            "path",
                            "namespace",
                            "ca_cert",
                            "timeout",
                            "auth",
                            "auth_mount",
                            "role_id",
                            "secret_id",
                            "fields",
                        ])?;
                        VaultAuth::AppRole {
                            mount: raw.auth_mount.clone().unwrap_or_else(|| "approle".into()),
                            role_id: self.reference(&field("role_id"), raw.role_id.as_ref())?,
                            secret_id: self
                                .reference(&field("secret_id"), raw.secret_id.as_ref())?,
                        }
                    }
                    "cert" => {
                        only(&[
                            "addr",
                            "mount",
                            "path",
                            "namespace",
                            "ca_cert",
                            "timeout",
                            "auth",
                            "auth_mount",
                            "cert_role",
                            "client_cert",
                            "client_key",
                            "fields",
                        ])?;
                        if raw.client_cert.is_some() != raw.client_key.is_some() {
                            return Err(self.err(
                                &field("client_cert"),
                                "client_cert and client_key go together",
                            ));
                        }
                        VaultAuth::Cert {
                            mount: raw.auth_mount.clone().unwrap_or_else(|| "cert".into()),
                            role: raw.cert_role.clone(),
                            cert: match &raw.client_cert {
                                Some(c) => Some(self.path(&field("client_cert"), c)?),
                                None => None,
                            },
                            key: match &raw.client_key {
                                Some(k) => Some(self.material(&field("client_key"), k)?),
                                None => None,
                            },
                        }
                    }
                    other => {
                        return Err(self.err(
                            &field("auth"),
                            format!("`{other}` is not an auth method: token, approle or cert"),
                        ));
                    }
                };
                Ok(Source::Vault(Box::new(Vault {
                    addr,
                    mount: raw.mount.clone().unwrap_or_else(|| "secret".into()),
                    path: path.trim_matches('/').to_string(),
                    namespace: raw.namespace.clone().filter(|n| !n.is_empty()),
                    ca_cert: self.path(&field("ca_cert"), ca_cert)?,
                    timeout: match &raw.timeout {
                        Some(t) => self.nonzero_duration(&field("timeout"), t)?,
                        None => Duration::from_secs(5),
                    },
                    auth,
                    fields,
                })))
            }
            other => Err(self.err(
                &field("kind"),
                format!("`{other}` is not a source kind: credentials, file or vault"),
            )),
        }
    }

    /// `pkg.Service/Method` of a routed method, `pkg.Service/*` of a routed service, or `*`.
    fn method_patterns(&self, key: &str, patterns: &[String]) -> Result<Vec<String>, Error> {
        for p in patterns {
            let known = p == "*"
                || match p.strip_suffix("/*") {
                    Some(service) => crate::methods::is_service(service),
                    None => crate::methods::ALL.iter().any(|m| m.name() == p),
                };
            if !known {
                return Err(self.err(
                    key,
                    format!("`{p}` is not a method this server serves (e.g. vitals.echo.v1.Echo/Echo, vitals.metrics.v1.Metrics/*, or *)"),
                ));
            }
        }
        Ok(patterns.to_vec())
    }

    fn auth(&self, raw: &RawAuth) -> Result<Auth, Error> {
        let mut rules = Vec::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let key = format!("auth.rules[{i}]");
            if r.identities.is_empty() || r.identities.iter().any(|id| id.trim().is_empty()) {
                return Err(self.err(
                    &format!("{key}.identities"),
                    "needs at least one non-empty identity",
                ));
            }
            rules.push(RuleConfig {
                identities: r.identities.clone(),
                methods: self.method_patterns(&format!("{key}.methods"), &r.methods)?,
            });
        }
        let mut bearer = Vec::new();
        for (i, b) in raw.bearer.iter().enumerate() {
            let key = format!("auth.bearer[{i}]");
            let field = |name: &str| format!("{key}.{name}");
            let methods = self.method_patterns(&field("methods"), &b.methods)?;
            let jwt_only = [
                ("algorithm", b.algorithm.is_some()),
                ("key", b.key.is_some()),
                ("issuer", b.issuer.is_some()),
                ("audience", b.audience.is_some()),
                ("leeway", b.leeway.is_some()),
            ];
            let kind = match b.kind.as_str() {
                "opaque" => {
                    if let Some((name, _)) = jwt_only.iter().find(|(_, set)| *set) {
                        return Err(self.err(&field(name), "does not apply to an opaque bearer"));
                    }
                    let tokens = b.tokens.as_deref().unwrap_or_default();
                    if tokens.is_empty() {
                        return Err(self.err(&field("tokens"), "needs at least one `secret:NAME`"));
                    }
                    BearerKind::Opaque {
                        tokens: tokens
                            .iter()
                            .map(|t| self.reference(&field("tokens"), Some(t)))
                            .collect::<Result<_, _>>()?,
                    }
                }
                "jwt" => {
                    if b.tokens.is_some() {
                        return Err(self.err(&field("tokens"), "does not apply to a jwt bearer"));
                    }
                    let algorithm = match b.algorithm.as_deref() {
                        Some("HS256") => JwtAlgorithm::Hs256,
                        Some("ES256") => JwtAlgorithm::Es256,
                        Some(other) => {
                            return Err(self.err(
                                &field("algorithm"),
                                format!("`{other}` is not supported: HS256 or ES256"),
                            ));
                        }
                        None => {
                            return Err(
                                self.err(&field("algorithm"), "is required: HS256 or ES256")
                            );
                        }
                    };
                    BearerKind::Jwt {
                        algorithm,
                        key: self.reference(&field("key"), b.key.as_ref())?,
                        issuer: b.issuer.clone(),
                        audience: b.audience.clone(),
                        leeway: match &b.leeway {
                            Some(l) => self.duration(&field("leeway"), l)?,
                            None => Duration::from_secs(30),
                        },
                    }
                }
                other => {
                    return Err(self.err(
                        &field("kind"),
                        format!("`{other}` is not a bearer kind: opaque or jwt"),
                    ));
                }
            };
            bearer.push(BearerConfig { methods, kind });
        }
        Ok(Auth {
            public: self.method_patterns("auth.public", &raw.public)?,
            audit: self.method_patterns("auth.audit", &raw.audit)?,
            rules,
            bearer,
        })
    }

    fn log_level(&self, key: &str, value: &str) -> Result<String, Error> {
        value
            .parse::<tracing_subscriber::filter::Targets>()
            .map(|_| value.to_string())
            .map_err(|e| self.err(key, format!("`{value}` is not a log filter ({e})")))
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
    use std::fs;

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
            toml::to_string(&Config::load_raw(&Location::Dev("x".into())).unwrap()).unwrap();
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

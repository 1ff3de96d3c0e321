//! What serde reads from a config layer: strings for durations, sizes and addresses, every
//! key documented, unknown keys refused. A section left out of every layer takes its
//! `Default`, which is where the built-in defaults live (`config/vitalsd.toml` documents
//! the same values). [`super::validate`] turns this into the typed [`super::Config`].

use serde::{Deserialize, Serialize};

use super::LogFormat;

/// The config file's shape. `config/vitalsd.toml` documents every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub tls: RawTls,
    pub health: RawHealth,
    pub metrics: RawMetrics,
    pub log: RawLog,
    pub secrets: RawSecrets,
    pub auth: RawAuth,
    pub echo: RawEcho,
    pub push: RawPush,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    /// Addresses of the mTLS gRPC port.
    pub listen: Vec<String>,
    /// Open connections (TLS handshakes included) above which new ones are closed at once.
    pub max_connections: u64,
    /// Of those, how many may be in their TLS handshake at once: unfinished handshakes
    /// cannot take the slots of real clients.
    pub max_handshakes: u64,
    /// Calls in flight across all connections; more get RESOURCE_EXHAUSTED.
    pub max_calls: u64,
    /// Request bytes held, across all connections, by messages still arriving (past the
    /// first 4 KiB of each); a call that needs more gets RESOURCE_EXHAUSTED.
    pub max_request_buffer: String,
    /// A streaming call whose first request message is not whole by then ends with
    /// DEADLINE_EXCEEDED.
    pub first_message_timeout: String,
    /// A connection that has not finished its TLS handshake by then is closed.
    pub handshake_timeout: String,
    /// TCP keepalive idle time ("0s" turns it off).
    pub tcp_keepalive: String,
    /// HTTP/2 PING sent after this much silence on a connection ("0s" turns it off).
    pub http2_keepalive_interval: String,
    /// A PING not answered within this closes the connection.
    pub http2_keepalive_timeout: String,
    /// Concurrent streams (RPCs) per connection.
    pub max_concurrent_streams: u64,
    /// Largest request or response message ("4MiB", "65536").
    pub max_message_size: String,
    /// Largest request header list.
    pub max_header_list_size: String,
    /// Cap on a unary call's deadline, also applied when the client sends none.
    pub max_deadline: String,
    /// GOAWAY a connection with no RPC for this long ("0s": never).
    pub max_connection_idle: String,
    /// GOAWAY a connection this old, ±10% jitter ("0s": never).
    pub max_connection_age: String,
    /// After an age GOAWAY, in-flight RPCs get this long before the connection is closed.
    pub max_connection_age_grace: String,
    /// On SIGTERM, readiness turns NOT_SERVING and the listeners keep accepting for this
    /// long, so pollers see it before the GOAWAY ("0s": drain at once).
    pub shutdown_delay: String,
    /// On SIGTERM, in-flight RPCs get this long to finish.
    pub drain_timeout: String,
    /// Runtime worker threads; 0 means one per CPU.
    pub worker_threads: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["127.0.0.1:50051".into()],
            max_connections: 1024,
            max_handshakes: 64,
            max_calls: 2048,
            max_request_buffer: "16MiB".into(),
            first_message_timeout: "10s".into(),
            handshake_timeout: "5s".into(),
            tcp_keepalive: "60s".into(),
            http2_keepalive_interval: "30s".into(),
            http2_keepalive_timeout: "20s".into(),
            max_concurrent_streams: 128,
            max_message_size: "4MiB".into(),
            max_header_list_size: "16KiB".into(),
            max_deadline: "5m".into(),
            max_connection_idle: "0s".into(),
            max_connection_age: "0s".into(),
            max_connection_age_grace: "30s".into(),
            shutdown_delay: "5s".into(),
            drain_timeout: "10s".into(),
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain of the server, leaf first.
    pub cert: String,
    /// PEM private key of the server, a path (refused when readable by group or others) or
    /// `secret:NAME` (PEM text pulled from a secret source).
    pub key: String,
    /// PEM bundle of the CAs that issue client certificates.
    pub client_ca: String,
    /// Certificate revocation lists (PEM or DER files) checked for client certificates.
    pub crl: Vec<String>,
    /// Follow the files above on disk: `auto` (inotify, polling when it cannot be set up),
    /// `poll`, or `off`.
    pub watch: String,
    /// How long the files must be quiet after a change before they are read.
    pub watch_debounce: String,
    /// How often each file is looked at when polling.
    pub watch_interval: String,
    /// `[tls.issue]`: the server certificate is issued and renewed by a Vault or OpenBao
    /// `pki` engine; `cert` and `key` are then the state directory's file.
    /// Not printed by --check-config, which says where the certificate comes from instead:
    /// a Serialize impl for the section would be code for one diagnostic (docs/arm.md).
    #[serde(default, skip_serializing)]
    pub issue: Option<RawIssue>,
}

/// `[tls.issue]`: a key made on the device, its CSR signed by `POST /v1/{mount}/sign/{role}`,
/// renewed before it expires. Keys left out take the defaults config/vitalsd.toml gives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawIssue {
    /// `https://host:port` of Vault or OpenBao.
    pub addr: String,
    /// PEM bundle of the CA that issued the server's (Vault's) certificate.
    pub ca_cert: String,
    /// The namespace (Vault Enterprise, OpenBao namespaces); empty: none.
    pub namespace: String,
    /// Timeout of each request (default 10s).
    pub timeout: String,
    /// Where the pki engine is mounted (default `pki`).
    pub mount: String,
    /// The pki role that signs.
    pub role: String,
    /// The certificate's CN.
    pub common_name: String,
    /// DNS SANs.
    pub alt_names: Vec<String>,
    /// URI SANs, such as a SPIFFE id (the identity peers see).
    pub uri_sans: Vec<String>,
    /// IP SANs.
    pub ip_sans: Vec<String>,
    /// The key made on the device: p256 (default), p384 or ed25519.
    pub key_type: String,
    /// PEM bundle of the CA(s) an issued certificate must chain to (what the device's
    /// peers trust it by); empty: tls.client_ca.
    pub issuer_ca: String,
    /// The lifetime asked for; empty: the role's.
    pub ttl: String,
    /// Renew when this much validity is left; empty: a third of the lifetime.
    pub renew_before: String,
    /// Renew up to this much earlier, at random, so a fleet does not renew at once; empty:
    /// a tenth of `renew_before`.
    pub jitter: String,
    /// Where the key and certificate are kept; empty: `$STATE_DIRECTORY` (systemd's
    /// StateDirectory=), else /var/lib/vitals.
    pub state_dir: String,
    /// How to log in: cert (with the current certificate), approle or token.
    pub auth: String,
    /// Where the auth method is mounted (default `cert` or `approle`).
    pub auth_mount: String,
    /// cert auth: the role to log in as (optional).
    pub cert_role: String,
    /// token auth: `secret:NAME` of the token.
    pub token: String,
    /// approle auth, or the approle fallback: `secret:NAME` of the role id.
    pub role_id: String,
    /// approle auth, or the approle fallback: `secret:NAME` of the secret id.
    pub secret_id: String,
    /// cert auth only: `approle` logs in with role_id and secret_id when there is no
    /// certificate yet, or it expired while the device was off; empty: no fallback.
    pub fallback: String,
    /// Where the fallback AppRole is mounted (default `approle`).
    pub fallback_mount: String,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            cert: "/etc/vitalsd/tls/server.crt".into(),
            key: "/etc/vitalsd/tls/server.key".into(),
            client_ca: "/etc/vitalsd/tls/ca.crt".into(),
            crl: Vec::new(),
            issue: None,
            watch: "auto".into(),
            watch_debounce: "500ms".into(),
            watch_interval: "5s".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHealth {
    /// Plaintext listeners that serve only grpc.health.v1 (for probes without mTLS):
    /// `host:port`, `unix:/path` or `unix-abstract:name`. Empty: none.
    pub plaintext_listen: Vec<String>,
    /// Open connections on the plaintext listeners (their own cap, apart from the TLS one).
    pub plaintext_max_connections: u64,
    /// Filesystems whose free space is checked.
    pub disk_paths: Vec<String>,
    /// Overall health is NOT_SERVING below this much free space, in percent (0 turns it off).
    pub min_disk_free_percent: f64,
    /// Overall health is NOT_SERVING below this much available memory, in percent (0: off).
    pub min_memory_available_percent: f64,
    /// Overall health is NOT_SERVING when any sensor reads above this (0: off).
    pub max_temperature_celsius: f64,
    /// Overall health is NOT_SERVING when the server certificate has less validity left
    /// than this ("0s": only once it has expired).
    pub min_cert_validity: String,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            plaintext_listen: Vec::new(),
            plaintext_max_connections: 16,
            disk_paths: vec!["/".into()],
            min_disk_free_percent: 2.0,
            min_memory_available_percent: 2.0,
            max_temperature_celsius: 0.0,
            min_cert_validity: "0s".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    /// How often the sampler reads /proc and /sys; also the shortest Watch interval.
    pub sample_interval: String,
    /// How long one filesystem may take to answer statfs before it is reported stuck.
    pub filesystem_timeout: String,
    /// Mount points left out of the filesystem metrics (a regular expression; node_exporter's
    /// `--collector.filesystem.mount-points-exclude`). A mount holding a health.disk_paths
    /// entry is always read.
    pub filesystem_mount_points_exclude: String,
    /// Filesystem types left out (node_exporter's `--collector.filesystem.fs-types-exclude`,
    /// plus FUSE's types).
    pub filesystem_types_exclude: String,
    /// Block devices left out of node_disk_* (node_exporter's
    /// `--collector.diskstats.device-exclude`).
    pub disk_devices_exclude: String,
    /// Network devices left out of node_network_* and node_arp_entries (node_exporter's
    /// `--collector.netdev.device-exclude`; empty: none).
    pub network_devices_exclude: String,
    /// A directory of `*.prom` files whose metrics are served too (node_exporter's
    /// textfile collector); empty: off.
    pub textfile_directory: String,
}

/// node_exporter's default (`--collector.filesystem.mount-points-exclude`, v1.5 to today).
pub const MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter's default (`--collector.filesystem.fs-types-exclude`), and FUSE's types:
/// a FUSE request its server has read is waited out even through SIGKILL, so a hung FUSE
/// mount would keep the daemon from exiting (RELIABILITY.md).
pub const FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs|fuse|fuse\\..*|fuseblk|virtiofs)$";
/// node_exporter's default (`--collector.diskstats.device-exclude`): RAM disks, loop
/// devices, floppies and partitions of whole disks it already reports.
pub const DISK_DEVICES_EXCLUDE: &str = "^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$";

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            sample_interval: "5s".into(),
            filesystem_timeout: "1s".into(),
            filesystem_mount_points_exclude: MOUNT_POINTS_EXCLUDE.into(),
            filesystem_types_exclude: FS_TYPES_EXCLUDE.into(),
            disk_devices_exclude: DISK_DEVICES_EXCLUDE.into(),
            network_devices_exclude: String::new(),
            textfile_directory: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSecrets {
    /// How long startup may wait for every referenced secret, retries included.
    pub startup_timeout: String,
    /// Where secrets come from, tried in order.
    pub sources: Vec<RawSource>,
}

impl Default for RawSecrets {
    fn default() -> Self {
        RawSecrets {
            startup_timeout: "60s".into(),
            sources: Vec::new(),
        }
    }
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
    /// vault: re-read the entry this often while running (absent or 0: only at start and
    /// reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// vault: secret name = field of the KV entry, e.g. `{ tls_key = "tls_key_pem" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawEcho {
    /// Honour the echo request's `panic` knob (tests exception handling); keep off.
    pub allow_panic: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPush {
    /// The Prometheus remote_write endpoint (`https://host/api/v1/write`); empty: no push.
    pub url: String,
    /// How often the series are pushed (±10% jitter); a health change pushes at once.
    pub interval: String,
    /// Per request.
    pub timeout: String,
    /// How the daemon proves itself to the receiver: none, mtls or bearer.
    pub auth: String,
    /// PEM bundle that must have issued an https receiver's certificate.
    pub ca_cert: String,
    /// mtls: the client certificate; empty: the device's own (`tls.cert`).
    pub client_cert: String,
    /// mtls: its key, a path or `secret:NAME`; empty: `tls.key`.
    pub client_key: String,
    /// bearer: the token, `secret:NAME`.
    pub bearer_token: String,
    /// Labels added to every series; `instance` is the device's identity unless set here.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Bytes of encoded samples kept while the receiver cannot take them; when full, the
    /// oldest are dropped (and counted).
    pub buffer_size: String,
    /// A directory where buffered samples are also written, so a restart keeps them (e.g.
    /// `/var/lib/vitals/push` with the unit's StateDirectory); empty: memory only.
    pub buffer_dir: String,
    /// A failed push is retried after this, doubling (with jitter) up to `max_backoff`.
    pub min_backoff: String,
    pub max_backoff: String,
}

impl Default for RawPush {
    fn default() -> Self {
        RawPush {
            url: String::new(),
            interval: "30s".into(),
            timeout: "10s".into(),
            auth: "none".into(),
            ca_cert: "/etc/ssl/certs/ca-certificates.crt".into(),
            client_cert: String::new(),
            client_key: String::new(),
            bearer_token: String::new(),
            labels: Default::default(),
            buffer_size: "2MiB".into(),
            buffer_dir: String::new(),
            min_backoff: "1s".into(),
            max_backoff: "1m".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    /// Methods any verified client may call.
    pub public: Vec<String>,
    /// Methods whose every call is audit-logged, not only denials.
    pub audit: Vec<String>,
    /// Grants: identities to methods.
    pub rules: Vec<RawRule>,
    /// Methods that also need a bearer token.
    pub bearer: Vec<RawBearer>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            public: vec![
                "grpc.health.v1.Health/*".into(),
                "grpc.reflection.v1.ServerReflection/*".into(),
                "grpc.reflection.v1alpha.ServerReflection/*".into(),
            ],
            audit: Vec::new(),
            rules: Vec::new(),
            bearer: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Exact identities, `prefix*` (whole path segments: `a/b*` is `a/b` and `a/b/…`), or `*`.
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
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// Level or filter directive: error, warn, info, debug, trace, or `info,vitals=debug`.
    pub level: String,
    /// auto, text, json or journald.
    pub format: LogFormat,
    /// One line per call with method, peer, status code and latency.
    pub access: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: LogFormat::Auto,
            access: false,
        }
    }
}

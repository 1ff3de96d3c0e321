//! Validation: the merged raw config turned into typed values (addresses, durations,
//! sizes, paths, secret references, ACL patterns), or an error naming the file, the key and
//! why.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    Auth, BearerConfig, BearerKind, Config, Echo, Error, Health, Issue, JwtAlgorithm, ListenAddr,
    Log, Material, Metrics, Pattern, Push, PushAuth, RawAuth, RawConfig, RawIssue, RawPush,
    RawSource, RuleConfig, SECRET_PREFIX, Secrets, Server, Source, Tls, Vault, VaultAuth,
    layers::Layers, units,
};
use super::{FileWatch, RawTls, WatchMode};
use crate::x509::KeyType;

/// Validates the merged raw config into the typed one; every error names the key and the
/// layer that set it.
pub(super) fn validate(
    layers: &Layers,
    raw: RawConfig,
    files: Vec<PathBuf>,
) -> Result<Config, Error> {
    let v = Validator { layers };
    let s = &raw.server;
    let server = Server {
        listen: v.addrs("server.listen", &s.listen)?,
        max_connections: v.range("server.max_connections", s.max_connections, 1, 1 << 20)? as usize,
        max_handshakes: v.range("server.max_handshakes", s.max_handshakes, 1, 1 << 20)? as usize,
        max_calls: v.range("server.max_calls", s.max_calls, 1, 1 << 24)? as usize,
        max_request_buffer: v.size(
            "server.max_request_buffer",
            &s.max_request_buffer,
            64 << 10,
            1 << 32,
        )? as usize,
        first_message_timeout: v
            .nonzero_duration("server.first_message_timeout", &s.first_message_timeout)?,
        handshake_timeout: v.nonzero_duration("server.handshake_timeout", &s.handshake_timeout)?,
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
        shutdown_delay: v.duration("server.shutdown_delay", &s.shutdown_delay)?,
        drain_timeout: v.duration("server.drain_timeout", &s.drain_timeout)?,
        worker_threads: v.range("server.worker_threads", s.worker_threads, 0, 256)? as usize,
    };
    if server.max_request_buffer < server.max_message_size {
        return Err(layers.invalid(
            "server.max_request_buffer",
            format!(
                "{} bytes is less than server.max_message_size ({}): no message of that size could arrive",
                server.max_request_buffer, server.max_message_size
            ),
        ));
    }
    if server.listen.is_empty() {
        return Err(layers.invalid("server.listen", "at least one address is needed"));
    }
    let mut tls = Tls {
        cert: v.path("tls.cert", &raw.tls.cert)?,
        key: v.material("tls.key", &raw.tls.key)?,
        client_ca: v.path("tls.client_ca", &raw.tls.client_ca)?,
        crl: raw
            .tls
            .crl
            .iter()
            .map(|p| v.path("tls.crl", p))
            .collect::<Result<_, _>>()?,
        issue: match &raw.tls.issue {
            Some(issue) => Some(Box::new(v.issue(issue, &raw.tls.client_ca)?)),
            None => None,
        },
        watch: v.file_watch(&raw.tls)?,
    };
    if let Some(issue) = &tls.issue {
        // The issued key is made here and kept in the state directory: the daemon serves
        // that file, whatever tls.cert and tls.key say.
        tls.cert = issue.file();
        tls.key = Material::Path(issue.file());
    }
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
        return Err(layers.invalid(
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
            return Err(layers.invalid(
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
            return Err(layers.invalid(
                &key,
                "the Vault login secrets need a credentials or file source to come from",
            ));
        }
    }
    if let Some(issue) = &tls.issue {
        let needs_secrets = std::iter::once(&issue.auth)
            .chain(&issue.fallback)
            .any(|a| !matches!(a, VaultAuth::Cert { .. }));
        let local = secrets
            .sources
            .iter()
            .any(|s| matches!(s, Source::Credentials | Source::File { .. }));
        if needs_secrets && !local {
            return Err(layers.invalid(
                "tls.issue",
                "the login secrets (token, role_id, secret_id) need a credentials or file source in [[secrets.sources]] to come from",
            ));
        }
    }
    let h = &raw.health;
    let health = Health {
        plaintext_listen: h
            .plaintext_listen
            .iter()
            .map(|a| v.listen_addr("health.plaintext_listen", a))
            .collect::<Result<_, _>>()?,
        plaintext_max_connections: v.range(
            "health.plaintext_max_connections",
            h.plaintext_max_connections,
            1,
            1 << 16,
        )? as usize,
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
                return Err(layers.invalid(
                    "health.max_temperature_celsius",
                    format!("{t} is not between 0 and 200"),
                ));
            }
        },
        min_cert_validity: v.duration("health.min_cert_validity", &h.min_cert_validity)?,
    };
    let sample_interval = v.duration("metrics.sample_interval", &raw.metrics.sample_interval)?;
    if sample_interval < Duration::from_millis(500) {
        return Err(layers.invalid("metrics.sample_interval", "must be at least 500ms"));
    }
    let filesystem_timeout = v.duration(
        "metrics.filesystem_timeout",
        &raw.metrics.filesystem_timeout,
    )?;
    if filesystem_timeout < Duration::from_millis(10) || filesystem_timeout > sample_interval {
        return Err(layers.invalid(
            "metrics.filesystem_timeout",
            "must be between 10ms and metrics.sample_interval",
        ));
    }
    let m = &raw.metrics;
    let metrics = Metrics {
        sample_interval,
        filesystem_timeout,
        filesystem_mount_points_exclude: v.pattern(
            "metrics.filesystem_mount_points_exclude",
            &m.filesystem_mount_points_exclude,
        )?,
        filesystem_types_exclude: v.pattern(
            "metrics.filesystem_types_exclude",
            &m.filesystem_types_exclude,
        )?,
        disk_devices_exclude: v.pattern("metrics.disk_devices_exclude", &m.disk_devices_exclude)?,
        network_devices_exclude: v.pattern(
            "metrics.network_devices_exclude",
            &m.network_devices_exclude,
        )?,
        textfile_directory: match m.textfile_directory.trim() {
            "" => None,
            dir => Some(v.path("metrics.textfile_directory", dir)?),
        },
    };
    let log = Log {
        level: v.log_level("log.level", &raw.log.level)?,
        format: raw.log.format,
        access: raw.log.access,
    };
    let auth = v.auth(&raw.auth)?;
    if !auth.bearer.is_empty() && secrets.sources.is_empty() {
        return Err(layers.invalid(
            "auth.bearer",
            "refers to secrets but no [[secrets.sources]] are configured",
        ));
    }
    let push = v.push(&raw.push, &tls)?;
    if matches!(push.auth, PushAuth::Bearer { .. }) && secrets.sources.is_empty() {
        return Err(layers.invalid(
            "push.bearer_token",
            "refers to a secret but no [[secrets.sources]] are configured",
        ));
    }
    Ok(Config {
        server,
        tls,
        health,
        metrics,
        log,
        secrets,
        auth,
        echo: Echo {
            allow_panic: raw.echo.allow_panic,
        },
        push,
        files,
    })
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

    /// `host:port`, `unix:/path` or `unix-abstract:name`.
    fn listen_addr(&self, key: &str, value: &str) -> Result<ListenAddr, Error> {
        if let Some(path) = value.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(self.err(key, format!("`{value}`: unix: needs an absolute path")));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(name) = value.strip_prefix("unix-abstract:") {
            // sun_path holds 108 bytes, the leading NUL included.
            if name.is_empty() || name.len() > 107 {
                return Err(self.err(key, format!("`{value}`: a name of 1 to 107 bytes")));
            }
            return Ok(ListenAddr::UnixAbstract(name.to_string()));
        }
        Ok(ListenAddr::Tcp(
            self.addrs(key, std::slice::from_ref(&value.to_string()))?[0],
        ))
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

    /// A regular expression (regex-lite's syntax, which covers node_exporter's flag
    /// values); empty means none.
    fn pattern(&self, key: &str, value: &str) -> Result<Option<Pattern>, Error> {
        if value.is_empty() {
            return Ok(None);
        }
        let regex = regex_lite::Regex::new(value)
            .map_err(|e| self.err(key, format!("`{value}` is not a regular expression: {e}")))?;
        Ok(Some(Pattern {
            text: value.to_owned(),
            regex,
        }))
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

    fn file_watch(&self, raw: &RawTls) -> Result<FileWatch, Error> {
        let mode = match raw.watch.as_str() {
            "auto" => WatchMode::Auto,
            "poll" => WatchMode::Poll,
            "off" => WatchMode::Off,
            other => {
                return Err(self.err(
                    "tls.watch",
                    format!("`{other}` is not a watch mode: auto, poll or off"),
                ));
            }
        };
        Ok(FileWatch {
            mode,
            debounce: self.duration("tls.watch_debounce", &raw.watch_debounce)?,
            interval: self.nonzero_duration("tls.watch_interval", &raw.watch_interval)?,
        })
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
            ("refresh_interval", raw.refresh_interval.is_some()),
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
                let addr = self.https_addr(&field("addr"), &addr)?;
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
                            "refresh_interval",
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
                            "refresh_interval",
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
                            "refresh_interval",
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
                    refresh_interval: match &raw.refresh_interval {
                        Some(t) => self.optional_duration(&field("refresh_interval"), t)?,
                        None => None,
                    },
                })))
            }
            other => Err(self.err(
                &field("kind"),
                format!("`{other}` is not a source kind: credentials, file or vault"),
            )),
        }
    }

    /// `https://host[:port]`, without a trailing slash.
    fn https_addr(&self, key: &str, addr: &str) -> Result<String, Error> {
        let addr = addr.trim_end_matches('/').to_string();
        let host = addr
            .strip_prefix("https://")
            .ok_or_else(|| self.err(key, format!("`{addr}` must be an https:// address")))?;
        if host.is_empty() || host.contains('/') {
            return Err(self.err(key, format!("`{addr}` must be https://host[:port]")));
        }
        Ok(addr)
    }

    /// `[tls.issue]`: where the pki engine is, what to ask for, when to renew, and how to
    /// log in.
    fn issue(&self, raw: &RawIssue, client_ca: &str) -> Result<Issue, Error> {
        let field = |name: &str| format!("tls.issue.{name}");
        let required = |name: &str, value: &str| {
            if value.trim().is_empty() {
                Err(self.err(&field(name), "is required"))
            } else {
                Ok(value.trim().to_string())
            }
        };
        let or = |value: &str, default: &str| {
            Some(value.trim())
                .filter(|v| !v.is_empty())
                .unwrap_or(default)
                .to_string()
        };
        let optional = |name: &str, value: &str| match value.trim() {
            "" => Ok(None),
            v => self.nonzero_duration(&field(name), v).map(Some),
        };
        let addr = self.https_addr(&field("addr"), &required("addr", &raw.addr)?)?;
        let ca_cert = self.path(&field("ca_cert"), &required("ca_cert", &raw.ca_cert)?)?;
        let name_ok = |v: &str| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let mount = or(&raw.mount, "pki");
        let role = required("role", &raw.role)?;
        for (name, value) in [("mount", &mount), ("role", &role)] {
            if !name_ok(value.trim_matches('/')) || value.contains("..") {
                return Err(self.err(
                    &field(name),
                    format!("`{value}` is not a name (letters, digits, - _ .)"),
                ));
            }
        }
        let common_name = required("common_name", &raw.common_name)?;
        let ip_sans = raw
            .ip_sans
            .iter()
            .map(|ip| {
                ip.trim().parse().map_err(|_| {
                    self.err(&field("ip_sans"), format!("`{ip}` is not an IP address"))
                })
            })
            .collect::<Result<_, _>>()?;
        for (name, values) in [("alt_names", &raw.alt_names), ("uri_sans", &raw.uri_sans)] {
            if let Some(bad) = values
                .iter()
                .find(|v| v.trim().is_empty() || v.contains(','))
            {
                return Err(self.err(
                    &field(name),
                    format!("`{bad}` is empty or has a comma (give one name per entry)"),
                ));
            }
        }
        let key_type = match raw.key_type.trim() {
            "" | "p256" => KeyType::P256,
            "p384" => KeyType::P384,
            "ed25519" => KeyType::Ed25519,
            other => {
                return Err(self.err(
                    &field("key_type"),
                    format!("`{other}` is not a key type: p256, p384 or ed25519"),
                ));
            }
        };
        let issuer_ca = match raw.issuer_ca.trim() {
            "" => self.path("tls.client_ca", client_ca)?,
            path => self.path(&field("issuer_ca"), path)?,
        };
        let ttl = optional("ttl", &raw.ttl)?;
        let renew_before = optional("renew_before", &raw.renew_before)?;
        if let (Some(ttl), Some(before)) = (ttl, renew_before)
            && before >= ttl
        {
            return Err(self.err(
                &field("renew_before"),
                "is not shorter than tls.issue.ttl: every certificate would be renewed at once",
            ));
        }
        let jitter = match raw.jitter.trim() {
            "" => None,
            j => Some(self.duration(&field("jitter"), j)?),
        };
        let state_dir = match raw.state_dir.trim() {
            "" => std::env::var_os("STATE_DIRECTORY")
                .and_then(|dirs| {
                    // systemd lists several directories with colons; the first is ours.
                    dirs.to_str()
                        .and_then(|d| d.split(':').next())
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| PathBuf::from("/var/lib/vitals")),
            dir => PathBuf::from(dir),
        };
        if !state_dir.is_absolute() {
            return Err(self.err(&field("state_dir"), "must be an absolute path"));
        }
        let approle = |mount: &str| -> Result<VaultAuth, Error> {
            Ok(VaultAuth::AppRole {
                mount: or(mount, "approle"),
                role_id: self.reference(
                    &field("role_id"),
                    Some(&raw.role_id).filter(|r| !r.is_empty()),
                )?,
                secret_id: self.reference(
                    &field("secret_id"),
                    Some(&raw.secret_id).filter(|r| !r.is_empty()),
                )?,
            })
        };
        let given = |name: &str, value: &str| {
            if value.is_empty() {
                Ok(())
            } else {
                Err(self.err(
                    &field(name),
                    format!("does not apply to auth = \"{}\"", raw.auth),
                ))
            }
        };
        let (auth, fallback) = match raw.auth.trim() {
            "cert" => {
                given("token", &raw.token)?;
                let fallback = match raw.fallback.trim() {
                    "" => {
                        given("role_id", &raw.role_id)?;
                        given("secret_id", &raw.secret_id)?;
                        None
                    }
                    "approle" => Some(approle(&raw.fallback_mount)?),
                    other => {
                        return Err(self.err(
                            &field("fallback"),
                            format!("`{other}` is not a fallback: approle, or leave it out"),
                        ));
                    }
                };
                let auth = VaultAuth::Cert {
                    mount: or(&raw.auth_mount, "cert"),
                    role: Some(raw.cert_role.clone()).filter(|r| !r.is_empty()),
                    cert: None,
                    key: None,
                };
                (auth, fallback)
            }
            "approle" => {
                given("token", &raw.token)?;
                given("fallback", &raw.fallback)?;
                given("cert_role", &raw.cert_role)?;
                (approle(&raw.auth_mount)?, None)
            }
            "token" => {
                for (name, value) in [
                    ("role_id", &raw.role_id),
                    ("secret_id", &raw.secret_id),
                    ("fallback", &raw.fallback),
                    ("cert_role", &raw.cert_role),
                    ("auth_mount", &raw.auth_mount),
                ] {
                    given(name, value)?;
                }
                let token =
                    self.reference(&field("token"), Some(&raw.token).filter(|t| !t.is_empty()))?;
                (VaultAuth::Token { token }, None)
            }
            "" => return Err(self.err(&field("auth"), "is required: cert, approle or token")),
            other => {
                return Err(self.err(
                    &field("auth"),
                    format!("`{other}` is not an auth method: cert, approle or token"),
                ));
            }
        };
        Ok(Issue {
            addr,
            ca_cert,
            namespace: Some(raw.namespace.trim().to_string()).filter(|n| !n.is_empty()),
            timeout: optional("timeout", &raw.timeout)?.unwrap_or(Duration::from_secs(10)),
            mount: mount.trim_matches('/').to_string(),
            role,
            common_name,
            alt_names: raw.alt_names.iter().map(|n| n.trim().to_string()).collect(),
            uri_sans: raw.uri_sans.iter().map(|n| n.trim().to_string()).collect(),
            ip_sans,
            key_type,
            issuer_ca,
            ttl,
            renew_before,
            jitter,
            state_dir,
            auth,
            fallback,
        })
    }

    /// `pkg.Service/Method` of a routed method, `pkg.Service/*` of a routed service, the
    /// path of a page (`/metrics`), or `*`.
    fn method_patterns(&self, key: &str, patterns: &[String]) -> Result<Vec<String>, Error> {
        for p in patterns {
            let known = p == "*"
                || crate::methods::PAGES.contains(&p.as_str())
                || match p.strip_suffix("/*") {
                    Some(service) => crate::methods::is_service(service),
                    None => crate::methods::ALL.iter().any(|m| m.name() == p),
                };
            if !known {
                return Err(self.err(
                    key,
                    format!("`{p}` is not a method this server serves (e.g. vitals.echo.v1.Echo/Echo, vitals.metrics.v1.Metrics/*, /metrics, or *)"),
                ));
            }
        }
        Ok(patterns.to_vec())
    }

    /// `[push]`: off without a URL; otherwise an http(s) URL without credentials in it,
    /// and the auth it names with what that needs.
    fn push(&self, raw: &RawPush, tls: &Tls) -> Result<Push, Error> {
        let url = Some(raw.url.trim().to_owned()).filter(|u| !u.is_empty());
        let https = match &url {
            Some(u) => {
                let https = u.starts_with("https://");
                let rest = u
                    .strip_prefix("https://")
                    .or_else(|| u.strip_prefix("http://"))
                    .ok_or_else(|| {
                        self.err(
                            "push.url",
                            format!("`{u}` is not an http:// or https:// URL"),
                        )
                    })?;
                let authority = rest.split('/').next().unwrap_or_default();
                if authority.contains('@') {
                    return Err(self.err(
                        "push.url",
                        "credentials do not go in the URL: use auth = \"bearer\" with a secret",
                    ));
                }
                if authority.is_empty() || u.parse::<http::Uri>().is_err() {
                    return Err(self.err("push.url", format!("`{u}` is not a valid URL")));
                }
                https
            }
            None => false,
        };
        let field = |name: &str| format!("push.{name}");
        let auth = match raw.auth.as_str() {
            "none" => PushAuth::None,
            "mtls" => {
                if url.is_some() && !https {
                    return Err(self.err("push.auth", "mtls needs an https:// URL"));
                }
                PushAuth::Mtls {
                    cert: match raw.client_cert.as_str() {
                        "" => tls.cert.clone(),
                        c => self.path(&field("client_cert"), c)?,
                    },
                    key: match raw.client_key.as_str() {
                        "" => tls.key.clone(),
                        k => self.material(&field("client_key"), k)?,
                    },
                }
            }
            "bearer" => {
                let token = raw
                    .bearer_token
                    .strip_prefix(SECRET_PREFIX)
                    .ok_or_else(|| {
                        self.err(
                            "push.bearer_token",
                            "bearer auth needs the token as `secret:NAME`",
                        )
                    })?;
                PushAuth::Bearer {
                    token: self.secret_name("push.bearer_token", token)?,
                }
            }
            other => {
                return Err(self.err(
                    "push.auth",
                    format!("`{other}` is not one of none, mtls, bearer"),
                ));
            }
        };
        for (name, value) in &raw.labels {
            let valid = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if name.is_empty() || !valid || name.starts_with("__") {
                return Err(self.err(
                    "push.labels",
                    format!("`{name}` is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"),
                ));
            }
            if value.is_empty() {
                return Err(self.err("push.labels", format!("`{name}` has an empty value")));
            }
        }
        let interval = self.duration(&field("interval"), &raw.interval)?;
        if interval < Duration::from_millis(500) {
            return Err(self.err("push.interval", "must be at least 500ms"));
        }
        let min_backoff = self.nonzero_duration(&field("min_backoff"), &raw.min_backoff)?;
        let max_backoff = self.duration(&field("max_backoff"), &raw.max_backoff)?;
        if max_backoff < min_backoff {
            return Err(self.err("push.max_backoff", "is shorter than push.min_backoff"));
        }
        Ok(Push {
            url,
            interval,
            timeout: self.nonzero_duration(&field("timeout"), &raw.timeout)?,
            auth,
            ca_cert: self.path(&field("ca_cert"), &raw.ca_cert)?,
            labels: raw.labels.clone(),
            buffer_size: self.size(&field("buffer_size"), &raw.buffer_size, 64 << 10, 1 << 30)?
                as usize,
            buffer_dir: Some(raw.buffer_dir.trim())
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            min_backoff,
            max_backoff,
        })
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

//! Pulled secrets: config values that say `secret:NAME` are filled at startup (and at
//! reload) from the configured sources, tried in order: systemd credentials, a directory of
//! files, Vault/OpenBao KV v2. The first source that has a name wins.
//!
//! A secret's value lives in [`Secret`], which zeroizes its memory on drop and prints as
//! `[redacted]`. No error, log line or status line here contains a value: errors name the
//! source, the secret and the reason.
//!
//! With `[tls.issue]`, `issue.rs` has the server certificate signed by a pki engine and
//! `verify.rs` says whether a certificate may be written or served.

mod http;
pub mod issue;
mod local;
mod vault;
pub mod verify;

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::{
    config::{Config, Material, SECRET_PREFIX, Source},
    tls,
};

/// A secret value. Zeroized on drop; `[redacted]` in Debug and Display.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, for secrets that are text (tokens, PEM).
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The same value without a trailing newline (files written with `echo` have one).
    fn trimmed(self) -> Secret {
        let len = self.0.trim_ascii_end().len();
        if len == self.0.len() {
            return self;
        }
        Secret::new(self.0[..len].to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The secrets a config refers to, by name.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Secret>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// Secrets given directly (tests, embedding).
    pub fn from_map(map: BTreeMap<String, Secret>) -> Secrets {
        Secrets(map)
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The names whose values differ between `self` and `other` (or that only one has).
    pub fn changed(&self, other: &Secrets) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .iter()
            .filter(|(name, value)| other.get(name).is_none_or(|v| v.expose() != value.expose()))
            .map(|(name, _)| name.clone())
            .collect();
        names.extend(other.0.keys().filter(|n| !self.0.contains_key(*n)).cloned());
        names.sort();
        names
    }

    /// The private key `material` names: a key file, or the PEM text of a pulled secret.
    pub fn key(&self, material: &Material) -> Result<tls::Key, tls::Error> {
        match material {
            Material::Path(path) => tls::Key::load(path),
            Material::Secret(name) => {
                let origin = PathBuf::from(format!("{SECRET_PREFIX}{name}"));
                let secret = self
                    .get(name)
                    .ok_or_else(|| tls::Error::MissingSecret { name: name.clone() })?;
                Ok(tls::Key {
                    der: tls::parse_key(secret.expose(), &origin)?,
                    origin,
                })
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("secret `{name}`: no source has it ({tried})")]
    Missing { name: String, tried: String },
    /// An empty value (a file holding only a newline, an empty Vault field): a mistake in
    /// what was provisioned, never a usable key, token or credential.
    #[error("secret `{name}` from {source_name} is empty")]
    Empty { name: String, source_name: String },
    #[error("secret `{name}` from {source_name}: {reason}")]
    Source {
        name: String,
        source_name: String,
        reason: String,
    },
    /// A local file or credential that is there but cannot be a secret (a FIFO, a device,
    /// too large, readable by others): what was provisioned is wrong, and waiting will not
    /// mend it.
    #[error("secret `{name}` from {source_name}: {reason}")]
    Unreadable {
        name: String,
        source_name: String,
        reason: String,
    },
    #[error(
        "secret `{name}` from {source_name}: gave up after {attempts} attempts in {waited:?}: {reason}"
    )]
    Deadline {
        name: String,
        source_name: String,
        attempts: u32,
        waited: Duration,
        reason: String,
    },
}

/// How a failed request is to be treated.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connection refused, timeouts, 5xx, 429: worth another try.
    Transient(String),
    /// 403, a missing path or field, a bad certificate: trying again will not help.
    Permanent(String),
}

/// A source's name in messages.
pub fn describe(source: &Source) -> String {
    match source {
        Source::Credentials => "systemd credentials".to_string(),
        Source::File { dir } => format!("files in {}", dir.display()),
        Source::Vault(vault) => format!("vault {}/{}/{}", vault.addr, vault.mount, vault.path),
    }
}

/// Where each referenced secret will come from, for `--check-config`: (name, source or why
/// none). Reads no value.
pub fn plan(config: &Config) -> Vec<(String, Result<String, String>)> {
    config
        .secret_names()
        .into_iter()
        .map(|name| {
            let found = locate(
                &config.secrets.sources,
                &name,
                is_vault_login(config, &name),
            )
            .map(|i| describe(&config.secrets.sources[i]))
            .ok_or_else(|| tried(config, &name));
            (name, found)
        })
        .collect()
}

fn tried(config: &Config, name: &str) -> String {
    let sources: Vec<String> = config.secrets.sources.iter().map(describe).collect();
    if sources.is_empty() {
        return format!("no [[secrets.sources]] configured for `{name}`");
    }
    format!("tried {}", sources.join(", "))
}

/// Whether `name` is a Vault login secret (which cannot come from Vault itself).
fn is_vault_login(config: &Config, name: &str) -> bool {
    use crate::config::VaultAuth;
    config.secrets.sources.iter().any(|s| match s {
        Source::Vault(v) => match &v.auth {
            VaultAuth::Token { token } => token == name,
            VaultAuth::AppRole {
                role_id, secret_id, ..
            } => role_id == name || secret_id == name,
            VaultAuth::Cert { key, .. } => {
                matches!(key, Some(crate::config::Material::Secret(n)) if n == name)
            }
        },
        _ => false,
    })
}

/// The index of the first source that has `name`. Local sources are asked whether the file
/// is there (whatever it is: one that cannot be read is refused by name when it is read);
/// a Vault source has the names its `fields` map.
fn locate(sources: &[Source], name: &str, local_only: bool) -> Option<usize> {
    sources.iter().position(|source| match source {
        Source::Credentials => local::credentials_dir().is_some_and(|d| d.join(name).exists()),
        Source::File { dir } => dir.join(name).exists(),
        Source::Vault(vault) => !local_only && vault.fields.contains_key(name),
    })
}

/// Says what the daemon is waiting for (a log line and the systemd STATUS).
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// Pulls every secret `config` refers to, within `config.secrets.startup_timeout`.
pub async fn pull(config: &Config, progress: Progress<'_>) -> Result<Secrets, Error> {
    pull_until(
        config,
        Instant::now() + config.secrets.startup_timeout,
        progress,
    )
    .await
}

/// Pulls every secret like [`pull`], each request tried once: a refresh that fails tries
/// again at its next turn instead of waiting here.
pub async fn pull_once(config: &Config) -> Result<Secrets, Error> {
    Box::pin(pull_until(config, Instant::now(), &quiet)).await
}

/// Progress of a refresh, which never waits: debug lines only.
fn quiet(message: &str) {
    tracing::debug!("{message}");
}

/// The version of the entry the Vault source `index` of `config` reads, for a refresh to
/// know whether to read it again; `None` when the token may not read the entry's metadata.
/// Each request is tried once.
pub async fn vault_version(
    config: &Config,
    index: usize,
    local: &Secrets,
) -> Result<Option<u64>, Error> {
    let source = &config.secrets.sources[index];
    let Source::Vault(vault) = source else {
        return Ok(None);
    };
    vault::version(vault, &config.tls, local, Instant::now(), &quiet)
        .await
        .map_err(|e| {
            let names: Vec<String> = vault.fields.keys().cloned().collect();
            e.named(&names, describe(source))
        })
}

pub use vault::TokenLife;

/// Why the operator's Vault token could not be looked up or renewed.
#[derive(Debug)]
pub struct TokenError {
    /// Trying again later may help (the store unreachable, 5xx); otherwise the token is
    /// expired, revoked or may not renew itself.
    pub transient: bool,
    pub error: Error,
}

/// What the store says of the operator's token of `source` (a Vault source with token
/// auth), renewing it first when `renew`. `None` for any other source.
pub async fn token_life(
    source: &Source,
    local: &Secrets,
    renew: bool,
) -> Option<Result<TokenLife, TokenError>> {
    let Source::Vault(vault) = source else {
        return None;
    };
    let crate::config::VaultAuth::Token { token: name } = &vault.auth else {
        return None;
    };
    let failed = |transient, reason| TokenError {
        transient,
        error: Error::Source {
            name: name.clone(),
            source_name: describe(source),
            reason,
        },
    };
    let Some(token) = local.get(name) else {
        return Some(Err(failed(false, "the token was not pulled".into())));
    };
    Some(
        vault::token_life(vault, token, renew)
            .await
            .map_err(|f| match f {
                Failure::Transient(reason) => failed(true, reason),
                Failure::Permanent(reason) => failed(false, reason),
            }),
    )
}

/// Pulls every secret `config` refers to; requests are retried until `deadline`.
async fn pull_until(
    config: &Config,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<Secrets, Error> {
    let mut secrets = BTreeMap::new();
    let mut from_vault: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    // Local secrets first: Vault logins need some of them.
    for name in config.secret_names() {
        let local_only = is_vault_login(config, &name);
        let Some(index) = locate(&config.secrets.sources, &name, local_only) else {
            return Err(Error::Missing {
                tried: tried(config, &name),
                name,
            });
        };
        let source = &config.secrets.sources[index];
        let read = match source {
            Source::Credentials => local::read_credential(&name),
            Source::File { dir } => local::read_file(dir, &name),
            Source::Vault(_) => {
                from_vault.entry(index).or_default().push(name);
                continue;
            }
        };
        let secret = read.map_err(|reason| Error::Unreadable {
            name: name.clone(),
            source_name: describe(source),
            reason,
        })?;
        let secret = nonempty(name.clone(), secret.trimmed(), source)?;
        secrets.insert(name, secret);
    }
    for (index, names) in from_vault {
        let Source::Vault(vault) = &config.secrets.sources[index] else {
            unreachable!("only vault sources are collected here")
        };
        let pulled = vault::pull(
            vault,
            &config.tls,
            &names,
            &Secrets(secrets.clone()),
            deadline,
            progress,
        )
        .await
        .map_err(|e| e.named(&names, describe(&config.secrets.sources[index])))?;
        for (name, secret) in pulled {
            let secret = nonempty(name.clone(), secret, &config.secrets.sources[index])?;
            secrets.insert(name, secret);
        }
    }
    Ok(Secrets(secrets))
}

/// `secret`, unless it is empty: wherever a secret is used (a TLS key, a token, a JWT key, a
/// Vault login), an empty one is a provisioning mistake, refused here once for all of them.
fn nonempty(name: String, secret: Secret, source: &Source) -> Result<Secret, Error> {
    if secret.expose().is_empty() {
        return Err(Error::Empty {
            name,
            source_name: describe(source),
        });
    }
    Ok(secret)
}

/// Runs `attempt` until it succeeds, fails permanently, or `deadline` passes, sleeping with
/// exponential backoff and full jitter between transient failures.
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    deadline: Instant,
    progress: Progress<'_>,
    mut attempt: F,
) -> Result<T, PullError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    const BASE: Duration = Duration::from_millis(200);
    const CAP: Duration = Duration::from_secs(5);
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let reason = match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Permanent(reason)) => return Err(PullError::Permanent(reason)),
            Err(Failure::Transient(reason)) => reason,
        };
        // Full jitter, but never past the deadline: the last attempt is made at it.
        let bound = BASE.saturating_mul(1 << attempts.min(16)).min(CAP);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PullError::Deadline {
                attempts,
                waited: started.elapsed(),
                reason,
            });
        }
        let sleep = bound.mul_f64(fastrand::f64()).min(left);
        progress(&format!(
            "waiting for secrets: {what}: {reason}; attempt {attempts}, next in {}ms, {}s left",
            sleep.as_millis(),
            left.as_secs()
        ));
        tokio::time::sleep(sleep).await;
    }
}

/// How pulling from one source failed, before it is told which secrets it was for.
#[derive(Debug)]
pub(crate) enum PullError {
    Permanent(String),
    Deadline {
        attempts: u32,
        waited: Duration,
        reason: String,
    },
}

impl PullError {
    fn named(self, names: &[String], source_name: String) -> Error {
        let name = names.join(", ");
        match self {
            PullError::Permanent(reason) => Error::Source {
                name,
                source_name,
                reason,
            },
            PullError::Deadline {
                attempts,
                waited,
                reason,
            } => Error::Deadline {
                name,
                source_name,
                attempts,
                waited,
                reason,
            },
        }
    }
}

/// Where the files of a `file` source or systemd's credentials live, for messages.
pub fn credentials_dir() -> Option<PathBuf> {
    local::credentials_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret never shows its value in Debug or Display, even nested.
    #[test]
    fn secret_is_redacted() {
        let secret = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        let mut map = BTreeMap::new();
        map.insert("pw".to_string(), secret);
        let secrets = Secrets(map);
        assert_eq!(format!("{secrets:?}"), "{\"pw\"}");
        assert_eq!(secrets.get("pw").unwrap().expose(), b"hunter2");
    }

    /// `changed` names what differs, in either direction, and never what is equal.
    #[test]
    fn changed_names_what_differs() {
        let of = |pairs: &[(&str, &str)]| {
            Secrets(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Secret::new(v.as_bytes().to_vec())))
                    .collect(),
            )
        };
        let old = of(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let new = of(&[("a", "1"), ("b", "9"), ("d", "4")]);
        assert_eq!(new.changed(&old), ["b", "c", "d"]);
        assert!(old.changed(&old.clone()).is_empty());
    }

    /// A trailing newline, as `echo` writes, is not part of the secret.
    #[test]
    fn trailing_newline_is_trimmed() {
        assert_eq!(Secret::new(b"tok\n".to_vec()).trimmed().expose(), b"tok");
        assert_eq!(Secret::new(b"a b".to_vec()).trimmed().expose(), b"a b");
    }

    /// Transient failures are retried until the deadline; permanent ones stop at once.
    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_permanent_and_at_deadline() {
        let progress = |_: &str| {};
        let mut calls = 0;
        let result: Result<(), _> = retry(
            "x",
            Instant::now() + Duration::from_secs(60),
            &progress,
            || {
                calls += 1;
                async { Err(Failure::Permanent("403".into())) }
            },
        )
        .await;
        assert!(matches!(result, Err(PullError::Permanent(_))));
        assert_eq!(calls, 1);

        let mut calls = 0;
        let started = Instant::now();
        let result: Result<(), _> = retry(
            "x",
            Instant::now() + Duration::from_secs(3),
            &progress,
            || {
                calls += 1;
                async { Err(Failure::Transient("refused".into())) }
            },
        )
        .await;
        assert!(
            matches!(result, Err(PullError::Deadline { .. })),
            "{result:?}"
        );
        assert!(calls > 1, "retried");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "the whole deadline is used"
        );

        let mut calls = 0;
        let result = retry(
            "x",
            Instant::now() + Duration::from_secs(60),
            &progress,
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Failure::Transient("503".into()))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 3);
    }
}

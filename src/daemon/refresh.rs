//! Secrets that change while the daemon runs (issue 17, item 3): KV v2 entries read again
//! on their source's `refresh_interval`, and the operator's Vault token renewed before its
//! TTL ends.
//!
//! Refresh: each interval the entry's metadata is read for its `current_version`, which
//! carries no value; only when the version differs from the one whose values are in use
//! are the secrets pulled again (all of them, as a reload pulls them), compared with those
//! in use, and the changed ones handed to the daemon, which builds the TLS identity, the
//! bearer policy and the push settings from them and swaps them in, or keeps what it has
//! when they do not validate. Refused values are offered again each interval until they
//! validate (a TLS key in the store that waits for its certificate file) or change. A token that may not read the metadata makes the refresh read the entry
//! itself each interval (said once in the log); nothing is applied unless a value changed.
//! Login tokens (AppRole, cert) are made for each refresh and revoked after it, as at
//! startup: no token lives between reads.
//!
//! Renewal: the operator's token (`auth = "token"`) is looked up (`lookup-self`) and, when
//! it has a TTL and is renewable, renewed (`renew-self`) at half its TTL. A token that
//! cannot be renewed (not renewable, at its max TTL, revoked) is logged once, with the time
//! it has left.
//!
//! Nothing here holds a timer when no source refreshes and no token expires.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::Running;
use crate::{
    config::{Config, Source, VaultAuth},
    error::chain,
    secrets::{self, Secrets},
    series::DaemonStats,
};

/// How soon a refresh or a renewal that failed is tried again, at most.
const RETRY: Duration = Duration::from_secs(30);

/// Secrets pulled by a refresh, for the config (generation) they were pulled for.
pub(super) struct Pulled {
    pub generation: u64,
    pub secrets: Secrets,
    /// The names whose values changed.
    pub changed: Vec<String>,
}

/// A source's refresh.
struct Refresh {
    index: usize,
    every: Duration,
    next: Instant,
    /// The entry's version when the values pulled were those in use; `None` until then.
    known: Option<u64>,
    failing: bool,
    said_no_metadata: bool,
}

/// The renewal of a source's operator token.
struct Renewal {
    index: usize,
    /// The token's name, and the value this state is about (a reload may bring another).
    name: String,
    token: Vec<u8>,
    /// `None`: nothing to do (it does not expire, or cannot be renewed).
    next: Option<Instant>,
    /// When it expires, as last heard; `None` until looked up.
    expires: Option<Instant>,
    failing: bool,
}

/// Refreshes and renews for the running config until `pulled` closes; starts over when a
/// reload changes the config.
pub(super) async fn run(
    mut running: watch::Receiver<Arc<Running>>,
    pulled: mpsc::Sender<Pulled>,
    counters: Arc<DaemonStats>,
) {
    loop {
        let mut current = running.borrow_and_update().clone();
        let (mut refreshes, mut renewals) = plan(&current.config);
        loop {
            for renewal in &mut renewals {
                renewal.follow(&current.secrets);
            }
            let next = refreshes
                .iter()
                .map(|r| r.next)
                .chain(renewals.iter().filter_map(|r| r.next))
                .min();
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = running.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let new = running.borrow_and_update().clone();
                    let same_config = new.generation == current.generation;
                    current = new;
                    if !same_config {
                        break;
                    }
                }
                () = due => {
                    let now = Instant::now();
                    for renewal in renewals.iter_mut().filter(|r| r.next.is_some_and(|t| t <= now)) {
                        renewal.run(&current.config, &current.secrets).await;
                    }
                    for refresh in refreshes.iter_mut().filter(|r| r.next <= now) {
                        if let Some(update) = refresh.run(&current, &counters).await
                            && pulled.send(update).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The refreshes and renewals `config` asks for.
fn plan(config: &Config) -> (Vec<Refresh>, Vec<Renewal>) {
    let mut refreshes = Vec::new();
    let mut renewals = Vec::new();
    for (index, source) in config.secrets.sources.iter().enumerate() {
        let Source::Vault(vault) = source else {
            continue;
        };
        if let Some(every) = vault.refresh_interval {
            refreshes.push(Refresh {
                index,
                every,
                next: Instant::now() + every,
                known: None,
                failing: false,
                said_no_metadata: false,
            });
        }
        if let VaultAuth::Token { token } = &vault.auth {
            renewals.push(Renewal {
                index,
                name: token.clone(),
                token: Vec::new(),
                next: None,
                expires: None,
                failing: false,
            });
        }
    }
    (refreshes, renewals)
}

impl Refresh {
    /// Checks the entry's version and, when it moved (or cannot be known), pulls the
    /// secrets again; returns them when a value differs from those in use.
    async fn run(&mut self, running: &Running, counters: &DaemonStats) -> Option<Pulled> {
        let config = &running.config;
        let source = secrets::describe(&config.secrets.sources[self.index]);
        let outcome = async {
            let version = secrets::vault_version(config, self.index, &running.secrets).await?;
            if version.is_none() && !self.said_no_metadata {
                self.said_no_metadata = true;
                tracing::info!(
                    source = %source,
                    "the Vault token may not read this entry's metadata, so each refresh reads the entry itself; grant `read` on MOUNT/metadata/PATH to move values only when they change"
                );
            }
            if version.is_some() && version == self.known {
                return Ok(None);
            }
            let pulled = secrets::pull_once(config).await;
            let counter = match pulled {
                Ok(_) => &counters.secret_pulls_ok,
                Err(_) => &counters.secret_pulls_failed,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let pulled = pulled?;
            let changed = pulled.changed(&running.secrets);
            if changed.is_empty() {
                // The version is known only once the daemon runs on what it holds: secrets
                // the daemon refused (a TLS key pulled before its certificate was written)
                // are pulled and offered again at the next turn.
                self.known = version;
                return Ok(None);
            }
            Ok::<_, secrets::Error>(Some(Pulled {
                generation: running.generation,
                secrets: pulled,
                changed,
            }))
        }
        .await;
        match outcome {
            Ok(update) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(source = %source, "refreshing secrets works again");
                }
                self.next = Instant::now() + self.every;
                update
            }
            Err(err) => {
                let again = self.every.min(RETRY);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        source = %source,
                        reason = %chain(&err),
                        retry_in_s = again.as_secs(),
                        "refreshing secrets failed; the ones in use stay"
                    );
                }
                self.next = Instant::now() + again;
                None
            }
        }
    }
}

impl Renewal {
    /// Starts over (a lookup now) when the token in use is not the one this state is about.
    fn follow(&mut self, secrets: &Secrets) {
        let Some(token) = secrets.get(&self.name) else {
            return;
        };
        if token.expose() != self.token.as_slice() {
            self.token = token.expose().to_vec();
            self.next = Some(Instant::now());
            self.expires = None;
            self.failing = false;
        }
    }

    /// Looks the token up (the first time) or renews it, and decides when to come back.
    async fn run(&mut self, config: &Config, secrets: &Secrets) {
        let source = &config.secrets.sources[self.index];
        let renew = self.expires.is_some();
        let Some(outcome) = secrets::token_life(source, secrets, renew).await else {
            self.next = None;
            return;
        };
        let source = secrets::describe(source);
        let now = Instant::now();
        let (next, said) = match outcome {
            Ok(life) => {
                self.failing = false;
                let expires = now + life.ttl;
                let before = self.expires.replace(expires);
                if life.ttl.is_zero() {
                    // It does not expire (a root token): nothing to do.
                    (None, None)
                } else if !life.renewable {
                    (
                        None,
                        Some((
                            "the Vault token is not renewable: reloads and refreshes that need it fail once it expires; provide a renewable or periodic token",
                            None,
                        )),
                    )
                } else if renew && before.is_some_and(|b| expires <= b + Duration::from_secs(1)) {
                    (
                        None,
                        Some((
                            "the Vault token cannot be renewed any further (its max TTL): reloads and refreshes that need it fail once it expires; provide a new token before then",
                            None,
                        )),
                    )
                } else {
                    if renew {
                        tracing::info!(source = %source, ttl_s = life.ttl.as_secs(), "renewed the Vault token");
                    }
                    (Some(now + (life.ttl / 2).max(Duration::from_secs(1))), None)
                }
            }
            Err(secrets::TokenError { transient, error }) => {
                let left = self.expires.map(|e| e.saturating_duration_since(now));
                let reason = Some(chain(&error));
                if transient {
                    // Again well before it runs out, at most every RETRY; said once.
                    let again = left
                        .map_or(RETRY, |l| (l / 4).min(RETRY))
                        .max(Duration::from_secs(1));
                    let first = !std::mem::replace(&mut self.failing, true);
                    (
                        Some(now + again),
                        first.then_some((
                            "could not look up or renew the Vault token; trying again",
                            reason,
                        )),
                    )
                } else {
                    (
                        None,
                        Some((
                            "the Vault token cannot be renewed: reloads and refreshes that need it fail once it expires; provide a new token",
                            reason,
                        )),
                    )
                }
            }
        };
        self.next = next;
        if let Some((what, reason)) = said {
            let left = self.expires.map(|e| e.saturating_duration_since(now));
            say(&source, &self.name, left, reason.as_deref(), what);
        }
    }
}

/// One line about the operator's token: one call site for all of them, since each costs
/// code in a binary with a size budget.
#[inline(never)]
fn say(source: &str, secret: &str, left: Option<Duration>, reason: Option<&str>, what: &str) {
    tracing::warn!(
        source,
        secret,
        expires_in_s = left.map(|l| l.as_secs()),
        reason,
        "{what}"
    );
}

//! The daemon's life after its config is loaded: build TLS and the services, serve on the
//! listeners it is handed, flip health to SERVING and tell systemd; reload on request; on
//! stop, turn health NOT_SERVING, GOAWAY every connection and let in-flight RPCs finish.
//!
//! - `start.rs`: the numbered startup steps, and [`StartError`] with its exit codes
//! - `signals.rs`: SIGHUP, SIGTERM and SIGINT turned into [`Control`]
//! - `check.rs`: what `--check-config` prints

mod check;
mod signals;
mod start;

pub use start::{Options, StartError, exit, start};

use std::{sync::Arc, time::SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    auth,
    config::{self, Config, Location},
    error::chain,
    health::{self, Health, Phase},
    methods,
    rpc_stats::RpcStats,
    sampler::{Published, Sampler},
    secrets::{self, Secrets},
    server::{self, Listeners, Live, Shared},
    service::{Router, echo::EchoService, health::HealthService, metrics::MetricsService},
    systemd,
    telemetry::Telemetry,
    tls,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the TLS identity: {0}")]
    Tls(#[from] tls::Error),
    #[error("{0}")]
    Config(#[from] config::Error),
    #[error("{0}")]
    Secrets(#[from] secrets::Error),
    #[error("{0}")]
    Auth(#[from] auth::Error),
    /// The blocking task that read files failed unexpectedly (a bug); the reload is refused.
    #[error("{what} failed unexpectedly: {reason}")]
    Task { what: &'static str, reason: String },
}

/// Runs file reading off the runtime; a panic in it refuses the reload instead of
/// taking the daemon down.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(Error::Task {
            what,
            reason: e.to_string(),
        })
    })
}

/// What the daemon can be told while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config files and certificates and apply what can change live.
    Reload,
    /// Stop accepting, drain, return.
    Stop,
}

/// What the health checks compare snapshots with; replaced on reload.
#[derive(Debug, Clone)]
struct Checks {
    thresholds: config::Health,
    cert_not_after: Option<SystemTime>,
}

/// A daemon ready to serve: TLS loaded, services built, the sampler running.
pub struct Daemon {
    location: Location,
    config: Config,
    health: Health,
    shared: Arc<Shared>,
    stats: Arc<RpcStats>,
    snapshots: watch::Receiver<Published>,
    checks: watch::Sender<Checks>,
    telemetry: Option<Arc<Telemetry>>,
    secrets: Secrets,
}

impl Daemon {
    /// Loads the TLS identity and builds everything that does not need a listener.
    /// Fails before anything is bound when a certificate or key is unusable.
    pub fn new(
        location: Location,
        config: Config,
        secrets: Secrets,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Result<Daemon, Error> {
        let identity = server_tls(&config.tls, &secrets)?;
        let policy = auth::Policy::new(&config.auth, &secrets)?;
        let shutdown = CancellationToken::new();
        let health = Health::new(&methods::HEALTH_SERVICES);
        let stats = Arc::new(RpcStats::new());
        let snapshots = Sampler::spawn(config.metrics.sample_interval);
        let live = live(
            &config, &identity, policy, &health, &snapshots, &stats, &shutdown,
        );
        let plaintext_cap = config.health.plaintext_max_connections;
        let shared = Shared::new(live, plaintext_cap, stats.clone(), shutdown);
        let checks = watch::channel(Checks {
            thresholds: config.health.clone(),
            cert_not_after: identity.not_after,
        })
        .0;
        Ok(Daemon {
            location,
            config,
            health,
            shared,
            stats,
            snapshots,
            checks,
            telemetry,
            secrets,
        })
    }

    /// The health state, for callers that embed the daemon.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Serves until told to stop (or until `control` closes), then drains. Returns once
    /// every connection has closed or the drain timeout has passed.
    pub async fn run(mut self, listeners: Listeners, mut control: mpsc::Receiver<Control>) {
        let (tls_addrs, plain_addrs) = listeners.addrs();
        warn_on_low_fd_limit(self.config.server.max_connections);
        let exposed = listeners.exposed_plaintext();
        if !exposed.is_empty() {
            tracing::warn!(
                addrs = %join(&exposed),
                "health.plaintext_listen is reachable from other hosts: anyone who can reach it learns, without a certificate, whether this device and its services are healthy; keep it on loopback or a unix socket unless that is meant (config/vitalsd.toml)"
            );
        }
        let checks = tokio::spawn(run_checks(
            self.health.clone(),
            self.snapshots.clone(),
            self.checks.subscribe(),
        ));
        let watchdog = systemd::spawn_watchdog();
        let serving = tokio::spawn(server::serve(
            listeners,
            self.shared.clone(),
            self.config.server.drain_timeout,
        ));

        self.health.set_phase(Phase::Serving);
        let status = format!("serving on {}", join(&tls_addrs));
        let (runtime, workers) = crate::runtime::describe();
        tracing::info!(
            listen = %join(&tls_addrs),
            runtime,
            workers,
            health_listen = %plain_addrs.join(","),
            files = %self.config.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
            "serving"
        );
        systemd::notify(&format!("READY=1\nSTATUS={status}"));

        while let Some(Control::Reload) = control.recv().await {
            systemd::notify("RELOADING=1\nSTATUS=reloading");
            let status = match self.reload().await {
                Ok(()) => status.clone(),
                Err(err) => {
                    let reason = chain(&err);
                    tracing::error!(reason = %reason, "reload rejected; still running on the previous config");
                    format!("{status}; last reload rejected: {reason}")
                }
            };
            systemd::notify(&format!("READY=1\nSTATUS={status}"));
        }

        let drain = self.config.server.drain_timeout;
        tracing::info!(drain_timeout_ms = drain.as_millis() as u64, "shutting down");
        systemd::notify("STOPPING=1\nSTATUS=draining in-flight calls");
        self.health.set_phase(Phase::Draining);
        self.shared.shutdown.cancel();
        let left = serving.await.unwrap_or(0);
        checks.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain timeout passed; closing what is left"
            );
        } else {
            tracing::info!("stopped");
        }
    }

    /// Re-reads the config, re-pulls its secrets and re-reads the certificates; applies them
    /// whole or not at all (a failed pull keeps the secrets the daemon has).
    async fn reload(&mut self) -> Result<(), Error> {
        let location = self.location.clone();
        let config = blocking("loading the config", move || Ok(Config::load(&location)?)).await?;
        let secrets = secrets::pull(&config, &progress).await?;
        let tls_config = config.tls.clone();
        let pulled = secrets.clone();
        let identity = blocking("loading the certificates", move || {
            Ok(server_tls(&tls_config, &pulled)?)
        })
        .await?;
        let policy = auth::Policy::new(&config.auth, &secrets)?;

        let mut config = config;
        for (what, old, new) in keep_restart_only(&self.config, &mut config) {
            tracing::warn!(key = what, current = %old, configured = %new, "changing this needs a restart; keeping the current value");
        }
        self.shared.reload(live(
            &config,
            &identity,
            policy,
            &self.health,
            &self.snapshots,
            &self.stats,
            &self.shared.shutdown,
        ));
        // Open connections whose client certificate the new CA or CRLs refuse get a
        // GOAWAY (a signature check each, so off the runtime).
        let shared = self.shared.clone();
        let refused = blocking("re-verifying open connections", move || {
            Ok(shared.reverify())
        })
        .await?;
        if refused > 0 {
            tracing::info!(
                connections = refused,
                "closing connections whose client certificate no longer verifies"
            );
        }
        self.checks.send_replace(Checks {
            thresholds: config.health.clone(),
            cert_not_after: identity.not_after,
        });
        if let Some(telemetry) = &self.telemetry {
            telemetry.apply(&config.log);
        }
        self.config = config;
        self.secrets = secrets;
        tracing::info!("reloaded the config, secrets and certificates");
        Ok(())
    }
}

/// Each connection is a descriptor: a soft limit below the connection cap (plus room for
/// listeners, logs and the sampler) means accept fails with EMFILE before the cap is reached.
fn warn_on_low_fd_limit(max_connections: usize) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<usize>()
                .ok()
        });
    if let Some(soft) = soft
        && soft < max_connections + 64
    {
        tracing::warn!(
            soft_limit = soft,
            max_connections,
            "the open-files limit is below server.max_connections + 64; raise it (LimitNOFILE= in the unit, ulimit -n) or lower the cap"
        );
    }
}

/// Says what a pull is waiting for, in the log and on systemd's status line.
pub fn progress(message: &str) {
    tracing::warn!("{message}");
    systemd::notify(&format!("STATUS={message}"));
}

/// Keys only a restart applies (sockets, the runtime, sizes fixed at start): `new` keeps
/// the running value of each, and each difference is returned as (key, running, configured).
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<(&'static str, String, String)> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($key:literal => $($field:ident).+;)*) => {$(
            if running.$($field).+ != new.$($field).+ {
                kept.push((
                    $key,
                    format!("{:?}", running.$($field).+),
                    format!("{:?}", new.$($field).+),
                ));
                new.$($field).+ = running.$($field).+.clone();
            }
        )*};
    }
    keep! {
        "server.listen" => server.listen;
        "server.worker_threads" => server.worker_threads;
        "server.max_connections" => server.max_connections;
        "server.max_handshakes" => server.max_handshakes;
        "server.tcp_keepalive" => server.tcp_keepalive;
        "server.drain_timeout" => server.drain_timeout;
        "health.plaintext_listen" => health.plaintext_listen;
        "health.plaintext_max_connections" => health.plaintext_max_connections;
        "metrics.sample_interval" => metrics.sample_interval;
    }
    kept
}

/// The server's certificate and key, read from their files or pulled secrets.
fn server_tls(tls: &config::Tls, secrets: &Secrets) -> Result<tls::ServerIdentity, tls::Error> {
    tls::server_config(&tls.cert, secrets.key(&tls.key)?, &tls.client_ca, &tls.crl)
}

/// What the server runs on for `config`: the TLS config and policy given, the limits, and
/// the full and health-only routers.
fn live(
    config: &Config,
    identity: &tls::ServerIdentity,
    policy: auth::Policy,
    health: &Health,
    snapshots: &watch::Receiver<Published>,
    stats: &Arc<RpcStats>,
    shutdown: &CancellationToken,
) -> Live {
    let max_message = config.server.max_message_size;
    let router = Router::full(
        HealthService::new(health.clone()),
        EchoService::new(max_message, config.echo.allow_panic, shutdown.clone()),
        MetricsService::new(
            snapshots.clone(),
            stats.clone(),
            config.metrics.sample_interval,
            shutdown.clone(),
        ),
        max_message,
    );
    let health_router = Router::health_only(HealthService::new(health.clone()), max_message);
    Live {
        tls: identity.config.clone(),
        verifier: identity.verifier.clone(),
        policy,
        limits: config.server.clone(),
        routes: Arc::new(router),
        health_routes: Arc::new(health_router),
    }
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Applies the health thresholds to every snapshot the sampler publishes, and again when
/// the thresholds change.
async fn run_checks(
    health: Health,
    mut snapshots: watch::Receiver<Published>,
    mut checks: watch::Receiver<Checks>,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let current = checks.borrow_and_update().clone();
        // The sampler's first value is empty while its first sample is taken.
        if snapshot.sampled_at_unix_ms > 0 {
            let failures = health::evaluate(
                &snapshot,
                &current.thresholds,
                current.cert_not_after,
                SystemTime::now(),
            );
            health.set_failures(failures);
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            changed = checks.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Restart-only keys keep their running value and are reported; live keys pass through.
    #[test]
    fn restart_only_keys_are_kept_and_reported() {
        let running = Config::parse("a", "").unwrap();
        let mut new = Config::parse(
            "b",
            "[server]\nlisten = [\"0.0.0.0:1\"]\nmax_handshakes = 9\nmax_message_size = \"1MiB\"\n",
        )
        .unwrap();
        let kept = keep_restart_only(&running, &mut new);
        let keys: Vec<_> = kept.iter().map(|(k, ..)| *k).collect();
        assert_eq!(keys, ["server.listen", "server.max_handshakes"]);
        assert_eq!(new.server.listen, running.server.listen);
        assert_eq!(new.server.max_handshakes, running.server.max_handshakes);
        assert_eq!(
            new.server.max_message_size,
            1 << 20,
            "a live key is applied"
        );
    }
}

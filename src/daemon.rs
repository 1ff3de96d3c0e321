//! The daemon's life after its config is loaded: build TLS and the services, serve on the
//! listeners it is handed, flip health to SERVING and tell systemd, then on shutdown turn
//! health to NOT_SERVING, GOAWAY every connection and let in-flight RPCs finish.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    health::{self, Health, Phase},
    rpc_stats::RpcStats,
    sampler::{Published, Sampler},
    server::{self, Limits, Listeners, Router, Shared},
    service::{self, echo::EchoService, health::HealthService, metrics::MetricsService},
    systemd, tls,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the TLS identity: {0}")]
    Tls(#[from] tls::Error),
}

/// A daemon ready to serve: TLS loaded, services built, the sampler running.
pub struct Daemon {
    config: Config,
    health: Health,
    shared: Arc<Shared>,
    snapshots: tokio::sync::watch::Receiver<Published>,
    cert_not_after: Option<SystemTime>,
}

impl Daemon {
    /// Loads the TLS identity and builds everything that does not need a listener.
    /// Fails before anything is bound when a certificate or key is unusable.
    pub fn new(config: Config) -> Result<Daemon, Error> {
        let identity = tls::server_config(&config.tls)?;
        let shutdown = CancellationToken::new();
        let health = Health::new(&service::HEALTH_SERVICES);
        let stats = Arc::new(RpcStats::new(&service::METHODS));
        let snapshots = Sampler::spawn(config.metrics.sample_interval);
        let max_message = config.server.max_message_bytes;
        let router = Router::full(
            HealthService::new(health.clone()),
            EchoService::new(max_message, shutdown.clone()),
            MetricsService::new(
                snapshots.clone(),
                stats.clone(),
                config.metrics.sample_interval,
                shutdown.clone(),
            ),
            max_message,
        );
        let health_router = Router::health_only(HealthService::new(health.clone()), max_message);
        let shared = Shared::new(
            tls::Store::new(identity.config),
            Limits::from_config(&config.server),
            router,
            health_router,
            stats,
            config.server.max_connections,
            config.server.tcp_keepalive,
            shutdown,
        );
        Ok(Daemon {
            config,
            health,
            shared,
            snapshots,
            cert_not_after: identity.not_after,
        })
    }

    /// The health state, for callers that embed the daemon.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Serves until `shutdown` resolves, then drains. Returns once every connection has
    /// closed or the drain timeout has passed.
    pub async fn run(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let (tls_addrs, plain_addrs) = listeners.addrs();
        let checks = tokio::spawn(run_checks(
            self.health.clone(),
            self.snapshots.clone(),
            self.config.health.clone(),
            self.cert_not_after,
        ));
        let watchdog = systemd::spawn_watchdog();
        let serving = tokio::spawn(server::serve(
            listeners,
            self.shared.clone(),
            self.config.server.drain_timeout,
        ));

        self.health.set_phase(Phase::Serving);
        let listen = join(&tls_addrs);
        tracing::info!(
            listen = %listen,
            health_listen = %join(&plain_addrs),
            files = %self.config.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
            "serving"
        );
        systemd::notify(&format!("READY=1\nSTATUS=serving on {listen}"));

        shutdown.await;

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
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Applies the health thresholds to every snapshot the sampler publishes.
async fn run_checks(
    health: Health,
    mut snapshots: tokio::sync::watch::Receiver<Published>,
    thresholds: crate::config::Health,
    cert_not_after: Option<SystemTime>,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        // The sampler's first value may be empty while its first sample is taken.
        if snapshot.sampled_at_unix_ms > 0 {
            let failures =
                health::evaluate(&snapshot, &thresholds, cert_not_after, SystemTime::now());
            health.set_failures(failures);
        }
        if snapshots.changed().await.is_err() {
            // The sampler has stopped; keep checking the certificate.
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let failures =
                    health::evaluate(&snapshot, &thresholds, cert_not_after, SystemTime::now());
                health.set_failures(failures);
            }
        }
    }
}

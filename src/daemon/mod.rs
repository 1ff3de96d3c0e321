//! The daemon's life after its config is loaded: build TLS and the services, serve on the
//! listeners it is handed, flip health to SERVING and tell systemd; reload on request; on
//! stop, turn health NOT_SERVING, GOAWAY every connection and let in-flight RPCs finish.
//!
//! - `start.rs`: the numbered startup steps, and [`StartError`] with its exit codes
//! - `signals.rs`: SIGHUP, SIGTERM and SIGINT turned into [`Control`]
//! - `check.rs`: what `--check-config` prints
//! - `push.rs`: the remote_write push task and its buffer
//! - `issue.rs`: the `[tls.issue]` certificate: issued at start, renewed by a task, rotated
//! - `files.rs`: the TLS files followed on disk, read again when they change
//! - `refresh.rs`: Vault secrets read again on an interval, the operator's token renewed
//! - `status.rs`: systemd's STATUS= line: the lifecycle, and readiness with its reasons

mod check;
mod files;
mod issue;
mod push;
mod refresh;
mod signals;
mod start;
mod status;

pub use start::{Options, StartError, exit, start};
use status::StatusLine;

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime},
};

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
    series::DaemonStats,
    server::{self, Listeners, Live, Shared},
    service::{
        Router,
        admin::{AdminService, RotateAsk, Rotator},
        echo::EchoService,
        health::HealthService,
        metrics::MetricsService,
        scrape::ScrapeService,
    },
    supervise, systemd,
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
    #[error("{0}")]
    Push(#[from] push::Error),
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
    /// Re-read the TLS identity (certificate, key, client CA, CRLs) with the running config
    /// and secrets, and serve it on new handshakes: a file changed on disk, or a certificate
    /// was issued. An unusable identity (a key that does not match its certificate, a
    /// half-written file) keeps the current one, and the log says why. `why` names the
    /// cause in the log.
    Identity { why: &'static str },
    /// Stop accepting, drain, return.
    Stop,
}

/// The config and secrets the daemon runs on, for its own tasks (file watching, secret
/// refresh) to follow across reloads.
struct Running {
    config: Arc<Config>,
    secrets: Secrets,
    /// Counts reloads: what was pulled for an older config is stale.
    generation: u64,
}

/// What the sampler publishes, and since when it runs.
#[derive(Clone)]
struct Snapshots {
    rx: watch::Receiver<Published>,
    started: std::time::Instant,
    /// The paths health watches, which the sampler always reads (a reload changes them).
    disk_paths: watch::Sender<Vec<std::path::PathBuf>>,
    /// What a scrape and a push read at the moment they are made.
    live: Arc<std::sync::Mutex<crate::sampler::Live>>,
}

/// A daemon ready to serve: TLS loaded, services built, the sampler running.
pub struct Daemon {
    location: Location,
    /// Shared with the daemon's own tasks ([`Running`]) without a copy.
    config: Arc<Config>,
    health: Health,
    shared: Arc<Shared>,
    stats: Arc<RpcStats>,
    snapshots: Snapshots,
    checks: watch::Sender<health::Checks>,
    telemetry: Option<Arc<Telemetry>>,
    secrets: Secrets,
    /// Reloads, secret pulls, the certificate's expiry and the push, for the metrics.
    counters: Arc<DaemonStats>,
    /// Where the push task pushes; a reload replaces it.
    push: watch::Sender<Option<Arc<push::Settings>>>,
    /// The push buffer, until `run` hands it to the push task.
    push_buffer: Option<push::Buffer>,
    /// Where the admin service sends rotates (`[tls.issue]` only).
    rotator: Rotator,
    /// What the renewal task reads them from, until `run` starts it.
    rotate_asks: Option<mpsc::Receiver<RotateAsk>>,
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
        let health = Health::new(&methods::LIVENESS_SERVICES, &methods::READINESS_SERVICES);
        let stats = Arc::new(RpcStats::new());
        let disk_paths = watch::channel(config.health.disk_paths.clone()).0;
        let snapshots = Snapshots {
            started: std::time::Instant::now(),
            rx: Sampler::spawn_selecting(
                config.metrics.sample_interval,
                config.metrics.filesystem_timeout,
                selection(&config),
                Some(disk_paths.subscribe()),
            ),
            disk_paths,
            live: Arc::new(std::sync::Mutex::new(crate::sampler::Live::new(
                live_settings(&config),
            ))),
        };
        let counters = Arc::new(DaemonStats::default());
        // The daemon gets here only once startup pulled every secret.
        counters.secret_pulls_ok.store(1, Relaxed);
        counters.last_reload_ok.store(1, Relaxed);
        counters
            .cert_not_after
            .store(unix_secs(identity.not_after), Relaxed);
        let push_settings = push::Settings::new(
            &config.push,
            &secrets,
            &instance(identity.identity.as_deref()),
        )?;
        let push_buffer = push::Buffer::new(
            config.push.buffer_size,
            config.push.buffer_dir.as_deref(),
            counters.clone(),
        )?;
        let (rotator, rotate_asks) = match &config.tls.issue {
            Some(_) => {
                let (tx, rx) = mpsc::channel(1);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let parts = Parts {
            health: &health,
            snapshots: &snapshots,
            stats: &stats,
            counters: &counters,
            shutdown: &shutdown,
            rotator: &rotator,
        };
        let live = live(&config, &identity, policy, &parts);
        let plaintext_cap = config.health.plaintext_max_connections;
        let shared = Shared::new(live, plaintext_cap, stats.clone(), shutdown);
        let checks = watch::channel(checks(&config, identity.not_after)).0;
        Ok(Daemon {
            location,
            config: Arc::new(config),
            health,
            shared,
            stats,
            snapshots,
            checks,
            telemetry,
            counters,
            push: watch::channel(push_settings.map(Arc::new)).0,
            push_buffer: Some(push_buffer),
            rotator,
            rotate_asks,
            secrets,
        })
    }

    /// Records that startup issued the certificate at `at` (`[tls.issue]`), for the metrics.
    pub fn issued_at_start(&self, at: Option<SystemTime>) {
        if self.config.tls.issue.is_some() {
            issue::enable(&self.counters.issue, at);
        }
    }

    /// The health state, for callers that embed the daemon.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Serves until told to stop (or until `control` closes), then drains. Returns once
    /// every connection has closed or the drain timeout has passed.
    /// `control` is the sender of `commands`, for the daemon's own tasks (file watching,
    /// renewal) to ask for an identity reload.
    pub async fn run(
        mut self,
        listeners: Listeners,
        control: mpsc::Sender<Control>,
        mut commands: mpsc::Receiver<Control>,
    ) {
        let (tls_addrs, plain_addrs) = listeners.addrs();
        warn_on_low_fd_limit(self.config.server.max_connections);
        let exposed = listeners.exposed_plaintext();
        if !exposed.is_empty() {
            tracing::warn!(
                addrs = %join(&exposed),
                "health.plaintext_listen is reachable from other hosts: anyone who can reach it learns, without a certificate, whether this device and its services are healthy; keep it on loopback or a unix socket unless that is meant (config/vitalsd.toml)"
            );
        }
        let watchdog = systemd::spawn_watchdog();
        if let Some(settings) = self.push.borrow().as_ref() {
            tracing::info!(url = settings.shown(), "pushing by remote_write");
        }
        let push_stop = CancellationToken::new();
        let pushing = self.push_buffer.take().map(|buffer| {
            let inputs = push::Inputs {
                snapshots: self.snapshots.rx.clone(),
                live: self.snapshots.live.clone(),
                stats: self.stats.clone(),
                health: self.health.clone(),
                counters: self.counters.clone(),
            };
            // The buffer outlives a run of the task that panics: nothing accepted is lost.
            let mut state = (inputs, buffer, self.push.subscribe(), push_stop.clone());
            tokio::spawn(async move {
                supervise::task("push", &mut state, |(inputs, buffer, settings, stop)| {
                    Box::pin(push::run(inputs, buffer, settings, stop))
                })
                .await
            })
        });
        let mut generation = 0;
        let running = watch::channel(self.running(generation)).0;
        let renewal_stop = CancellationToken::new();
        let mut renewal = match (&self.config.tls.issue, self.rotate_asks.take()) {
            (Some(_), Some(asks)) => Some(issue::Renewal {
                running: running.subscribe(),
                control: control.clone(),
                stats: self.counters.clone(),
                asks,
                stop: renewal_stop.clone(),
            }),
            _ => None,
        };
        let (refreshed_tx, mut refreshed) = mpsc::channel(1);
        // One task for the three (each spawned future type costs code in every scheduler),
        // each supervised on its own.
        let own_tasks = tokio::spawn({
            let mut files = (running.subscribe(), control.clone());
            let mut refresh = (running.subscribe(), refreshed_tx, self.counters.clone());
            async move {
                tokio::join!(
                    supervise::task("files", &mut files, |(running, control)| {
                        Box::pin(files::run(running.clone(), control.clone()))
                    }),
                    supervise::task("refresh", &mut refresh, |(running, pulled, counters)| {
                        Box::pin(refresh::run(
                            running.clone(),
                            pulled.clone(),
                            counters.clone(),
                        ))
                    }),
                    async {
                        if let Some(renewal) = renewal.as_mut() {
                            supervise::task("renewal", renewal, |r| Box::pin(issue::run(r))).await;
                        }
                    }
                );
            }
        });
        let serving = tokio::spawn(server::serve(
            listeners,
            self.shared.clone(),
            self.config.server.drain_timeout,
        ));

        // Readiness is judged on a real sample before the daemon says it is ready: until
        // then `""` and the services answer NOT_SERVING.
        let first = first_sample(
            self.snapshots.rx.clone(),
            self.config.metrics.filesystem_timeout,
        )
        .await;
        let verdicts = judge(&first, &self.checks.borrow());
        self.health.set_verdicts(verdicts);
        let status = Arc::new(StatusLine::new(join(&tls_addrs)));
        status.failures(self.health.failures());
        let checks = tokio::spawn({
            let mut state = (
                self.health.clone(),
                self.snapshots.rx.clone(),
                self.checks.subscribe(),
                status.clone(),
            );
            async move {
                supervise::task(
                    "checks",
                    &mut state,
                    |(health, snapshots, checks, status)| {
                        Box::pin(run_checks(
                            health.clone(),
                            snapshots.clone(),
                            checks.clone(),
                            status.clone(),
                        ))
                    },
                )
                .await
            }
        });
        self.health.set_phase(Phase::Serving);
        let (runtime, workers) = crate::runtime::describe();
        tracing::info!(
            listen = %join(&tls_addrs),
            runtime,
            workers,
            health_listen = %plain_addrs.join(","),
            files = %self.config.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
            "serving"
        );
        status.ready(None);

        loop {
            let command = tokio::select! {
                command = commands.recv() => command,
                Some(pulled) = refreshed.recv() => {
                    if self.refreshed(pulled, generation).await {
                        running.send_replace(self.running(generation));
                    }
                    continue;
                }
            };
            match command {
                Some(Control::Reload) => {
                    status.lifecycle("RELOADING=1\nSTATUS=reloading");
                    let outcome = self.reload().await;
                    let (counter, ok) = match outcome {
                        Ok(()) => (&self.counters.reloads_applied, 1),
                        Err(_) => (&self.counters.reloads_rejected, 0),
                    };
                    counter.fetch_add(1, Relaxed);
                    self.counters.last_reload_ok.store(ok, Relaxed);
                    if outcome.is_ok() {
                        generation += 1;
                        running.send_replace(self.running(generation));
                    }
                    let rejected = outcome.err().map(|err| {
                        let reason = chain(&err);
                        tracing::error!(reason = %reason, "reload rejected; still running on the previous config");
                        reason
                    });
                    status.ready(rejected);
                }
                Some(Control::Identity { why }) => {
                    if let Err(err) = self.reload_identity(why).await {
                        tracing::error!(why, reason = %chain(&err), "keeping the current TLS identity: the new one is unusable");
                    }
                }
                Some(Control::Stop) | None => break,
            }
        }

        // No renewal while stopping: a certificate written now would serve no one. (One
        // being written finishes: the state file is replaced by one rename.)
        renewal_stop.cancel();
        self.health.set_phase(Phase::Stopping);
        let delay = self.config.server.shutdown_delay;
        status.lifecycle(&format!(
            "STOPPING=1\nSTATUS=stopping: health NOT_SERVING for {}ms, then draining",
            delay.as_millis()
        ));
        if !delay.is_zero() {
            tracing::info!(
                shutdown_delay_ms = delay.as_millis() as u64,
                "stopping: readiness is NOT_SERVING and the listeners keep accepting for server.shutdown_delay, so pollers see it; a second SIGTERM or SIGINT drains at once"
            );
            wait_out(delay, &mut commands).await;
        }
        let drain = self.config.server.drain_timeout;
        tracing::info!(drain_timeout_ms = drain.as_millis() as u64, "shutting down");
        status.lifecycle("STATUS=draining in-flight calls");
        self.health.set_phase(Phase::Draining);
        self.shared.shutdown.cancel();
        let left = serving.await.unwrap_or(0);
        // The push stops after the drain (so it pushes the draining status), keeping what
        // it has not sent in its buffer directory.
        push_stop.cancel();
        if let Some(pushing) = pushing {
            let _ = pushing.await;
        }
        checks.abort();
        own_tasks.abort();
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

    /// Applies secrets a refresh pulled, as a reload applies its pull: the TLS identity,
    /// the bearer policy and the push settings are built from them with the running config
    /// and swapped in whole, or, when they do not validate, the secrets in use stay. Secrets
    /// pulled for a config a reload has since replaced are dropped (the reload pulled its
    /// own). Returns whether they were applied.
    async fn refreshed(&mut self, pulled: refresh::Pulled, generation: u64) -> bool {
        if pulled.generation != generation {
            return false;
        }
        let names = pulled.changed.join(",");
        let secrets = pulled.secrets;
        let outcome = async {
            let materials = materials(&self.config, &secrets).await?;
            self.secrets = secrets;
            self.apply(materials).await
        }
        .await;
        match outcome {
            Ok(()) => {
                tracing::info!(secrets = %names, "applied refreshed secrets");
                true
            }
            Err(err) => {
                tracing::error!(secrets = %names, reason = %chain(&err), "refreshed secrets rejected; the ones in use stay");
                false
            }
        }
    }

    /// What the daemon's own tasks follow.
    fn running(&self, generation: u64) -> Arc<Running> {
        Arc::new(Running {
            config: self.config.clone(),
            secrets: self.secrets.clone(),
            generation,
        })
    }

    /// Re-reads the TLS identity with the running config and secrets and swaps it in: new
    /// handshakes get it, open connections keep theirs (those whose client certificate the
    /// new CA or CRLs refuse get a GOAWAY, as on reload). The push is rebuilt too: its
    /// mutual TLS defaults to the same certificate and key, which must not go stale.
    async fn reload_identity(&mut self, why: &'static str) -> Result<(), Error> {
        let materials = materials(&self.config, &self.secrets).await?;
        self.apply(materials).await?;
        tracing::info!(why, "serving the new TLS identity on new connections");
        Ok(())
    }

    /// Serves `materials` with the running config: the identity and the policy on new
    /// connections, the push settings to the push task; and closes open connections the
    /// new verifier refuses.
    async fn apply(&mut self, materials: Materials) -> Result<(), Error> {
        let Materials {
            identity,
            push,
            policy,
        } = materials;
        self.push.send_replace(push.map(Arc::new));
        let parts = Parts {
            health: &self.health,
            snapshots: &self.snapshots,
            stats: &self.stats,
            counters: &self.counters,
            shutdown: &self.shared.shutdown,
            rotator: &self.rotator,
        };
        self.shared
            .reload(live(&self.config, &identity, policy, &parts));
        self.counters
            .cert_not_after
            .store(unix_secs(identity.not_after), Relaxed);
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
        self.checks
            .send_replace(checks(&self.config, identity.not_after));
        self.snapshots.disk_paths.send_if_modified(|paths| {
            let changed = *paths != self.config.health.disk_paths;
            paths.clone_from(&self.config.health.disk_paths);
            changed
        });
        Ok(())
    }

    /// Re-reads the config, re-pulls its secrets and re-reads the certificates; applies them
    /// whole or not at all (a failed pull keeps the secrets the daemon has).
    async fn reload(&mut self) -> Result<(), Error> {
        let location = self.location.clone();
        let config = blocking("loading the config", move || Ok(Config::load(&location)?)).await?;
        let pulled = secrets::pull(&config, &progress).await;
        let counter = match pulled {
            Ok(_) => &self.counters.secret_pulls_ok,
            Err(_) => &self.counters.secret_pulls_failed,
        };
        counter.fetch_add(1, Relaxed);
        let secrets = pulled?;
        let materials = materials(&config, &secrets).await?;
        // A trust bundle for issued certificates that cannot be read would refuse every
        // renewal: the reload is refused instead.
        if let Some(issue) = &config.tls.issue {
            let trust = issue.issuer_ca.clone();
            blocking("reading tls.issue.issuer_ca", move || {
                Ok(tls::load_certs(&trust).map(drop)?)
            })
            .await?;
        }

        let mut config = config;
        for (what, old, new) in keep_restart_only(&self.config, &mut config) {
            tracing::warn!(key = what, current = %old, configured = %new, "changing this needs a restart; keeping the current value");
        }
        self.config = Arc::new(config);
        self.secrets = secrets;
        self.apply(materials).await?;
        if let Some(telemetry) = &self.telemetry {
            telemetry.apply(&self.config.log);
        }
        tracing::info!("reloaded the config, secrets and certificates");
        Ok(())
    }
}

/// The TLS identity and the push settings `config` makes with `secrets`, read off the
/// runtime.
/// What the config builds from its files and secrets, whole or not at all.
struct Materials {
    identity: tls::ServerIdentity,
    /// `None`: no push configured.
    push: Option<push::Settings>,
    policy: auth::Policy,
}

/// Reads the certificate files (off the runtime) and builds what `config` makes of them
/// and of `secrets`: reload, a refresh and an identity reload all go through here.
async fn materials(config: &Config, secrets: &Secrets) -> Result<Materials, Error> {
    let tls_config = config.tls.clone();
    let pulled = secrets.clone();
    let push_config = config.push.clone();
    let (identity, push) = blocking("loading the certificates", move || {
        let identity = server_tls(&tls_config, &pulled)?;
        let own = instance(identity.identity.as_deref());
        let push = push::Settings::new(&push_config, &pulled, &own)?;
        Ok((identity, push))
    })
    .await?;
    let policy = auth::Policy::new(&config.auth, secrets)?;
    Ok(Materials {
        identity,
        push,
        policy,
    })
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
        "metrics.filesystem_timeout" => metrics.filesystem_timeout;
        "metrics.filesystem_mount_points_exclude" => metrics.filesystem_mount_points_exclude;
        "metrics.filesystem_types_exclude" => metrics.filesystem_types_exclude;
        "metrics.disk_devices_exclude" => metrics.disk_devices_exclude;
        "metrics.network_devices_exclude" => metrics.network_devices_exclude;
        "metrics.textfile_directory" => metrics.textfile_directory;
        "push.buffer_size" => push.buffer_size;
        "push.buffer_dir" => push.buffer_dir;
    }
    // The daemon serves the state file it started with (and issues, or does not, as it
    // started): both stay until a restart. The rest of [tls.issue] applies: the renewal task
    // follows the running config, and issues a new certificate at once when the held one
    // is no longer what it asks for (names, key type, issuer).
    let file = |config: &Config| config.tls.issue.as_ref().map(|i| i.file());
    if file(running) != file(new) {
        kept.push((
            "tls.issue",
            format!("{:?}", running.tls.issue.as_ref().map(|i| i.file())),
            format!("{:?}", new.tls.issue.as_ref().map(|i| i.file())),
        ));
        new.tls.issue = running.tls.issue.clone();
        new.tls.cert = running.tls.cert.clone();
        new.tls.key = running.tls.key.clone();
    }
    kept
}

/// The server's certificate and key, read from their files or pulled secrets.
fn server_tls(tls: &config::Tls, secrets: &Secrets) -> Result<tls::ServerIdentity, tls::Error> {
    tls::server_config(&tls.cert, secrets.key(&tls.key)?, &tls.client_ca, &tls.crl)
}

/// What the services are built from, the same for every reload.
struct Parts<'a> {
    health: &'a Health,
    snapshots: &'a Snapshots,
    stats: &'a Arc<RpcStats>,
    counters: &'a Arc<DaemonStats>,
    shutdown: &'a CancellationToken,
    rotator: &'a Rotator,
}

/// What the server runs on for `config`: the TLS config and policy given, the limits, and
/// the full and health-only routers.
fn live(
    config: &Config,
    identity: &tls::ServerIdentity,
    policy: auth::Policy,
    parts: &Parts<'_>,
) -> Live {
    let Parts {
        health,
        snapshots,
        stats,
        counters,
        shutdown,
        rotator,
    } = *parts;
    let max_message = config.server.max_message_size;
    let router = Router::full(
        HealthService::new(health.clone()),
        EchoService::new(max_message, config.echo.allow_panic, shutdown.clone()),
        MetricsService::new(
            snapshots.rx.clone(),
            snapshots.started,
            stats.clone(),
            health.clone(),
            config.metrics.sample_interval,
            shutdown.clone(),
        ),
        AdminService::new(rotator.clone()),
        ScrapeService::new(
            snapshots.rx.clone(),
            snapshots.started,
            stats.clone(),
            health.clone(),
            counters.clone(),
            snapshots.live.clone(),
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

/// The device's name in what it pushes (`instance`): its certificate's identity, else the
/// host name.
fn instance(identity: Option<&str>) -> String {
    identity.map_or_else(
        || {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default()
        },
        str::to_owned,
    )
}

/// Unix seconds of `time`, 0 when unknown.
fn unix_secs(time: Option<SystemTime>) -> u64 {
    time.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The filesystems the sampler reads, for `config`.
fn selection(config: &Config) -> crate::sampler::Selection {
    let regex = |p: &Option<config::Pattern>| p.as_ref().map(|p| p.regex.clone());
    crate::sampler::Selection {
        disk_paths: config.health.disk_paths.clone(),
        mount_points_exclude: regex(&config.metrics.filesystem_mount_points_exclude),
        types_exclude: regex(&config.metrics.filesystem_types_exclude),
    }
}

/// What the live reader (scrape and push) is told, for `config`.
fn live_settings(config: &Config) -> crate::sampler::live::Settings {
    let regex = |p: &Option<config::Pattern>| p.as_ref().map(|p| p.regex.clone());
    crate::sampler::live::Settings {
        disk_devices_exclude: regex(&config.metrics.disk_devices_exclude),
        network_devices_exclude: regex(&config.metrics.network_devices_exclude),
        textfile_directory: config.metrics.textfile_directory.clone(),
    }
}

/// What health judges snapshots against, for `config`.
fn checks(config: &Config, cert_not_after: Option<SystemTime>) -> health::Checks {
    health::Checks {
        thresholds: config.health.clone(),
        cert_not_after,
        stale_after: stale_after(&config.metrics),
    }
}

/// How old a sample may be before health calls it stale: three intervals, and room for the
/// filesystem reads of one sample to run into their deadline.
fn stale_after(metrics: &config::Metrics) -> Duration {
    metrics.sample_interval * 3 + metrics.filesystem_timeout * 2
}

/// The sampler's first sample, waiting for it as long as its filesystem reads may take;
/// the empty snapshot (which health judges "no metrics sample yet") if it has not come.
async fn first_sample(
    mut snapshots: watch::Receiver<Published>,
    filesystem_timeout: Duration,
) -> Published {
    let wait = filesystem_timeout * (crate::sampler::MAX_HUNG as u32 + 1) + Duration::from_secs(1);
    let first = snapshots.wait_for(|s| s.sampled_at_unix_ms > 0);
    let _ = tokio::time::timeout(wait, first).await;
    snapshots.borrow().clone()
}

/// Sleeps out the shutdown delay; a second stop ends it early, a reload is refused.
async fn wait_out(delay: Duration, commands: &mut mpsc::Receiver<Control>) {
    let until = tokio::time::sleep(delay);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => return,
            command = commands.recv() => match command {
                Some(Control::Stop) => {
                    tracing::info!("stopped again: draining now");
                    return;
                }
                Some(Control::Reload | Control::Identity { .. }) => {
                    tracing::warn!("reload ignored: the daemon is stopping");
                }
                None => return until.await,
            },
        }
    }
}

/// The checks' verdicts on `snapshot` now, and one for each supervised task (failing while
/// it keeps panicking).
fn judge(snapshot: &Published, checks: &health::Checks) -> Vec<health::Verdict> {
    let mut verdicts = health::judge(snapshot, checks, SystemTime::now());
    verdicts.extend(health::tasks(&supervise::restarts(), &supervise::failing()));
    verdicts
}

/// Judges every snapshot the sampler publishes, again when the checks change, and again
/// when the newest sample turns stale (a stuck sampler publishes nothing).
async fn run_checks(
    health: Health,
    mut snapshots: watch::Receiver<Published>,
    mut checks: watch::Receiver<health::Checks>,
    status: Arc<StatusLine>,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let current = checks.borrow_and_update().clone();
        health.set_verdicts(judge(&snapshot, &current));
        status.failures(health.failures());
        let sampled_at =
            SystemTime::UNIX_EPOCH + Duration::from_millis(snapshot.sampled_at_unix_ms);
        let stale_in = (sampled_at + current.stale_after + Duration::from_millis(10))
            .duration_since(SystemTime::now())
            .unwrap_or(current.stale_after);
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            changed = checks.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(stale_in) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adding or dropping `[tls.issue]`, or moving its state directory, needs a restart: a
    /// reload that does keeps the section and the state file it serves. Its other keys
    /// (the names asked for, here) apply.
    #[test]
    fn issue_section_is_restart_only() {
        let issue = "[tls.issue]\naddr = \"https://bao:8200\"\nca_cert = \"/ca\"\nrole = \"r\"\ncommon_name = \"d\"\nauth = \"cert\"\nstate_dir = \"/var/lib/v\"\n";
        let running = Config::parse("a", issue).unwrap();
        let mut new = Config::parse("b", "").unwrap();
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(
            kept.iter().map(|(k, ..)| *k).collect::<Vec<_>>(),
            ["tls.issue"]
        );
        assert_eq!(new.tls, running.tls);

        let moved = issue.replace("/var/lib/v", "/var/lib/w");
        let mut new = Config::parse("b", &moved).unwrap();
        assert_eq!(keep_restart_only(&running, &mut new).len(), 1);
        assert_eq!(new.tls, running.tls);

        let renamed = format!("{issue}alt_names = [\"d.example\"]\n");
        let mut new = Config::parse("b", &renamed).unwrap();
        assert!(keep_restart_only(&running, &mut new).is_empty());
        assert_eq!(new.tls.issue.unwrap().alt_names, ["d.example"]);
    }

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

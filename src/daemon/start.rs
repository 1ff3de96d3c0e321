//! Startup, as numbered steps: each one that fails stops the start with its own
//! [`StartError`], and so its own exit code, before the next one runs.
//!
//! 1. Dev PKI (`--dev` only), then the config, validated whole: nothing is bound yet.
//! 2. `--check-config` prints the effective config and stops here.
//! 3. Sockets passed by systemd, and the runtime.
//! 4. Secrets, before any port is bound; then, with `[tls.issue]`, the certificate.
//! 5. TLS, the policy and the services.
//! 6. Listeners: the ones systemd passed, else the configured addresses.
//! 7. Signal handlers; then serve until told to stop, and drain.

use std::{path::PathBuf, sync::Arc};

use tokio::sync::mpsc;

use super::{Daemon, check, progress, signals::Signals};
use crate::{
    config::{self, Config, Location},
    pki, secrets,
    server::{self, Listeners},
    systemd,
    telemetry::Telemetry,
};

/// Exit codes, from sysexits.h.
pub mod exit {
    pub const USAGE: u8 = 64;
    pub const UNAVAILABLE: u8 = 69;
    pub const OSERR: u8 = 71;
    pub const CANTCREAT: u8 = 73;
    pub const CONFIG: u8 = 78;
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub location: Location,
    /// Print the effective config and stop.
    pub check_config: bool,
}

/// Why the daemon did not start (or stopped before serving).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("making the dev PKI in {}", dir.display())]
    DevPki {
        dir: PathBuf,
        #[source]
        source: pki::Error,
    },
    #[error("invalid config: {0}")]
    Config(#[source] config::Error),
    #[error("{0}")]
    Check(#[source] check::Error),
    #[error("socket activation: {0}")]
    SocketActivation(#[source] systemd::ActivationError),
    #[error("socket activation: {0}")]
    AdoptSockets(#[source] std::io::Error),
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Secrets(#[source] secrets::Error),
    #[error("{0}")]
    Issue(#[source] super::issue::Error),
    #[error("{0}")]
    Build(#[source] super::Error),
    #[error("{0}")]
    Bind(#[source] server::Error),
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl StartError {
    /// The exit code of this failure. Every variant is decided here, with no catch-all.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::DevPki { .. } => exit::CANTCREAT,
            StartError::Config(_) | StartError::Check(_) | StartError::Build(_) => exit::CONFIG,
            // An empty secret is what was provisioned: a restart will not fix it.
            StartError::Secrets(
                secrets::Error::Empty { .. } | secrets::Error::Unreadable { .. },
            ) => exit::CONFIG,
            StartError::Secrets(
                secrets::Error::Missing { .. }
                | secrets::Error::Source { .. }
                | secrets::Error::Deadline { .. },
            ) => exit::UNAVAILABLE,
            // An unreachable or refusing pki: the start may succeed once it answers.
            StartError::Issue(super::issue::Error::Pki { .. }) => exit::UNAVAILABLE,
            StartError::Issue(super::issue::Error::Write { .. }) => exit::CANTCREAT,
            StartError::Issue(super::issue::Error::Trust(_)) => exit::CONFIG,
            StartError::SocketActivation(_)
            | StartError::AdoptSockets(_)
            | StartError::Runtime(_)
            | StartError::Bind(_)
            | StartError::Signals(_) => exit::OSERR,
        }
    }
}

/// Runs the daemon: the startup steps, then serving until SIGTERM or SIGINT, then the drain.
/// `Ok` once it has stopped cleanly (or printed the config for `--check-config`).
pub fn start(options: Options, telemetry: Arc<Telemetry>) -> Result<(), StartError> {
    // 1. Dev PKI and config.
    let location = options.location;
    if let Location::Dev(dir) = &location {
        match pki::ensure_dev(dir) {
            Ok(true) => tracing::info!(dir = %dir.display(), "created a dev PKI"),
            Ok(false) => {}
            Err(source) => {
                return Err(StartError::DevPki {
                    dir: dir.clone(),
                    source,
                });
            }
        }
    }
    let config = Config::load(&location).map_err(StartError::Config)?;

    // 2. --check-config.
    if options.check_config {
        let text = check::effective(&location, &config).map_err(StartError::Check)?;
        print!("{text}");
        return Ok(());
    }
    telemetry.apply(&config.log);

    // 3. Passed sockets, malloc's options (before any thread exists), the runtime.
    crate::malloc::tune();
    let passed = systemd::listeners().map_err(StartError::SocketActivation)?;
    let runtime =
        crate::runtime::build(config.server.worker_threads).map_err(StartError::Runtime)?;
    runtime.block_on(async move {
        // 4. Secrets.
        let secrets = if config.secret_names().is_empty() {
            Default::default()
        } else {
            systemd::notify("STATUS=pulling secrets");
            let secrets = secrets::pull(&config, &progress)
                .await
                .map_err(StartError::Secrets)?;
            let names = secrets.names().collect::<Vec<_>>().join(",");
            tracing::info!(secrets = %names, "pulled secrets");
            secrets
        };

        // 4b. The issued certificate, when there is none or it is due.
        let issued_at = if config.tls.issue.is_some() {
            systemd::notify("STATUS=getting the server certificate from the pki");
            super::issue::ensure(&config, &secrets, &progress)
                .await
                .map_err(StartError::Issue)?
        } else {
            None
        };

        // 5. TLS, policy, services.
        let (tls_addrs, plain_addrs) = (
            config.server.listen.clone(),
            config.health.plaintext_listen.clone(),
        );
        let dev = matches!(location, Location::Dev(_));
        let daemon =
            Daemon::new(location, config, secrets, Some(telemetry)).map_err(StartError::Build)?;
        daemon.issued_at_start(issued_at);

        // 6. Listeners.
        let listeners = if passed.is_empty() {
            Listeners::bind(&tls_addrs, &plain_addrs)
                .await
                .map_err(StartError::Bind)?
        } else {
            tracing::info!(sockets = passed.len(), "serving the sockets systemd passed; server.listen and health.plaintext_listen are not used");
            Listeners::from_std(passed).map_err(StartError::AdoptSockets)?
        };
        if dev {
            print_dev_hint(&listeners);
        }

        // 7. Signals, serve, drain.
        let signals = Signals::install().map_err(StartError::Signals)?;
        let (control, commands) = mpsc::channel(4);
        tokio::spawn(signals.forward(control.clone()));
        daemon.run(listeners, control, commands).await;
        Ok(())
    })
}

fn print_dev_hint(listeners: &Listeners) {
    let (addrs, _) = listeners.addrs();
    let addr = addrs.first().map(|a| a.to_string()).unwrap_or_default();
    let dir = pki::DEV_DIR;
    eprintln!(
        "\nvitalsd (dev) is serving mTLS on {addr} with the dev PKI in {dir}/. Try:\n\
         \x20 cargo run --bin vitalsctl -- --dev probe\n\
         \x20 cargo run --bin vitalsctl -- --dev echo hello\n\
         \x20 cargo run --bin vitalsctl -- --dev metrics\n\
         \x20 grpcurl -cacert {dir}/ca.crt -cert {dir}/client.crt -key {dir}/client.key {addr} list\n"
    );
}

//! vitalsd. Startup order: args, telemetry, config, TLS, listeners, READY; then serve until
//! SIGTERM or SIGINT, and drain. Every failed step exits with its own code before the next.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use std::sync::Arc;

use tokio::sync::mpsc;
use vitals::{
    config::{Config, Location},
    daemon::{Control, Daemon},
    error::chain,
    pki, secrets,
    server::Listeners,
    systemd, telemetry,
};

/// Exit codes, from sysexits.h.
mod exit {
    pub const USAGE: u8 = 64;
    pub const UNAVAILABLE: u8 = 69;
    pub const CANTCREAT: u8 = 73;
    pub const OSERR: u8 = 71;
    pub const CONFIG: u8 = 78;
}

const USAGE: &str = "\
usage: vitalsd [--config FILE | --dev] [--check-config]

  --config FILE    read FILE (and vitalsd.d/*.toml beside it) instead of
                   /etc/vitalsd/vitalsd.toml; VITALSD_* variables override both
  --dev            development mode: make a dev PKI in certs/dev if absent and
                   serve on 127.0.0.1:50051
  --check-config   validate the config, print the effective values, exit
  --version        print the version
  --help           print this help

signals: SIGHUP reloads the config and certificates, SIGTERM/SIGINT drain and stop.
Under systemd socket activation the passed sockets are served instead of server.listen
(a socket named \"health\" with FileDescriptorName= is a plaintext health listener).

exit codes: 0 stopped cleanly, 64 bad arguments, 69 a secret could not be
            pulled, 71 cannot bind, 73 cannot write the dev PKI,
            78 invalid config or TLS files";

struct Args {
    config: Option<PathBuf>,
    dev: bool,
    check_config: bool,
}

enum Parsed {
    Run(Args),
    Print(String),
}

fn parse_args() -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        config: None,
        dev: false,
        check_config: false,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") | Short('c') => args.config = Some(parser.value()?.into()),
            Long("dev") => args.dev = true,
            Long("check-config") => args.check_config = true,
            Long("version") | Short('V') => {
                return Ok(Parsed::Print(format!(
                    "vitalsd {}",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            Long("help") | Short('h') => return Ok(Parsed::Print(USAGE.to_string())),
            _ => return Err(arg.unexpected()),
        }
    }
    if args.dev && args.config.is_some() {
        return Err("--dev and --config cannot be used together".into());
    }
    Ok(Parsed::Run(args))
}

fn main() -> ExitCode {
    // 1. Arguments.
    let args = match parse_args() {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Print(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("vitalsd: {err}\n\n{USAGE}");
            return ExitCode::from(exit::USAGE);
        }
    };

    // 2. Telemetry, at the default level until the config says otherwise.
    let telemetry = Arc::new(telemetry::init());

    // 3. Config.
    let location = match (&args.config, args.dev) {
        (Some(path), _) => Location::File(path.clone()),
        (None, true) => Location::Dev(PathBuf::from(vitals::pki::DEV_DIR)),
        (None, false) => Location::Default,
    };
    if let Location::Dev(dir) = &location {
        match pki::ensure_dev(dir) {
            Ok(true) => tracing::info!(dir = %dir.display(), "created a dev PKI"),
            Ok(false) => {}
            Err(err) => {
                tracing::error!("{err:#}");
                return ExitCode::from(exit::CANTCREAT);
            }
        }
    }
    let config = match Config::load(&location) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("invalid config: {}", chain(&err));
            return ExitCode::from(exit::CONFIG);
        }
    };
    if args.check_config {
        return print_effective(&location, &config);
    }
    telemetry.apply(&config.log);

    let dev = matches!(location, Location::Dev(_));
    let passed = match systemd::listeners() {
        Ok(passed) => passed,
        Err(err) => {
            tracing::error!("socket activation: {err}");
            return ExitCode::from(exit::OSERR);
        }
    };
    let workers = config.server.worker_threads;
    let tls_addrs = config.server.listen.clone();
    let plain_addrs = config.health.plaintext_listen.clone();

    let runtime = match vitals::runtime::build(workers) {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("starting the runtime: {err}");
            return ExitCode::from(exit::OSERR);
        }
    };
    runtime.block_on(async move {
        // 4. Secrets, before any port is bound.
        let secrets = if config.secret_names().is_empty() {
            Default::default()
        } else {
            systemd::notify("STATUS=pulling secrets");
            match secrets::pull(&config, &vitals::daemon::progress).await {
                Ok(secrets) => {
                    tracing::info!(secrets = %secrets.names().collect::<Vec<_>>().join(","), "pulled secrets");
                    secrets
                }
                Err(err) => {
                    tracing::error!("{err}");
                    systemd::notify(&format!("STATUS=cannot start: {err}"));
                    return ExitCode::from(exit::UNAVAILABLE);
                }
            }
        };

        // 5. TLS and services.
        let daemon = match Daemon::new(location, config, secrets, Some(telemetry)) {
            Ok(daemon) => daemon,
            Err(err) => {
                tracing::error!("{}", chain(&err));
                return ExitCode::from(exit::CONFIG);
            }
        };

        // 6. Listeners: the ones systemd passed, else bind the configured addresses.
        let listeners = if passed.is_empty() {
            match Listeners::bind(&tls_addrs, &plain_addrs).await {
                Ok(listeners) => listeners,
                Err(err) => {
                    tracing::error!("{}", chain(&err));
                    return ExitCode::from(exit::OSERR);
                }
            }
        } else {
            tracing::info!(sockets = passed.len(), "serving the sockets systemd passed; server.listen and health.plaintext_listen are not used");
            match Listeners::from_std(passed) {
                Ok(listeners) => listeners,
                Err(err) => {
                    tracing::error!("socket activation: {err}");
                    return ExitCode::from(exit::OSERR);
                }
            }
        };
        if dev {
            print_dev_hint(&listeners);
        }
        // 7. Serve until told to stop, then drain.
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(err) => {
                tracing::error!("installing signal handlers: {err}");
                return ExitCode::from(exit::OSERR);
            }
        };
        let (control, commands) = mpsc::channel(4);
        tokio::spawn(signals.forward(control));
        daemon.run(listeners, commands).await;
        ExitCode::SUCCESS
    })
}

fn print_effective(location: &Location, config: &Config) -> ExitCode {
    match Config::load_raw(location).map(|raw| toml::to_string(&raw)) {
        Ok(Ok(text)) => {
            println!("# effective configuration (defaults, files, then VITALSD_* environment)");
            print!("{text}");
            let plan = secrets::plan(config);
            if !plan.is_empty() {
                println!("\n# secrets referenced, and the source each would come from now");
                for (name, source) in plan {
                    match source {
                        Ok(source) => println!("#   {name}: {source}"),
                        Err(why) => println!("#   {name}: not found ({why})"),
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("vitalsd: printing the config: {err}");
            ExitCode::from(exit::CONFIG)
        }
        Err(err) => {
            eprintln!("vitalsd: {err}");
            ExitCode::from(exit::CONFIG)
        }
    }
}

fn print_dev_hint(listeners: &Listeners) {
    let (addrs, _) = listeners.addrs();
    let addr = addrs.first().map(|a| a.to_string()).unwrap_or_default();
    let dir = vitals::pki::DEV_DIR;
    eprintln!(
        "\nvitalsd (dev) is serving mTLS on {addr} with the dev PKI in {dir}/. Try:\n\
         \x20 cargo run --bin vitalsctl -- --dev probe\n\
         \x20 cargo run --bin vitalsctl -- --dev echo hello\n\
         \x20 cargo run --bin vitalsctl -- --dev metrics\n\
         \x20 grpcurl -cacert {dir}/ca.crt -cert {dir}/client.crt -key {dir}/client.key {addr} list\n"
    );
}

/// The signals the daemon acts on, installed before it serves: a SIGHUP that arrives
/// right after READY must reload, not kill (SIGHUP's default action).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Turns SIGHUP into a reload and SIGTERM or SIGINT into a stop.
    async fn forward(mut self, control: mpsc::Sender<Control>) {
        loop {
            let command = tokio::select! {
                _ = self.term.recv() => Control::Stop,
                _ = self.int.recv() => Control::Stop,
                _ = self.hup.recv() => Control::Reload,
            };
            if control.send(command).await.is_err() || command == Control::Stop {
                // Keep the handlers installed: a second SIGTERM during the drain must not kill.
                return std::future::pending().await;
            }
        }
    }
}

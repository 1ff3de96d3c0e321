//! vitalsd. Parses the command line, starts logging, and hands over to
//! [`vitals::daemon::start`], which runs the numbered startup steps, serves until SIGTERM
//! or SIGINT, and drains. A failed step is one [`StartError`] with its own exit code.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use vitals::{
    config::Location,
    daemon::{Options, StartError, exit},
    error::chain,
    pki, systemd, telemetry,
};

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

enum Parsed {
    Run(Options),
    Print(String),
}

fn parse_args() -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let (mut config, mut dev, mut check_config) = (None::<PathBuf>, false, false);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") | Short('c') => config = Some(parser.value()?.into()),
            Long("dev") => dev = true,
            Long("check-config") => check_config = true,
            Long("version") | Short('V') => {
                let version = format!("vitalsd {}", env!("CARGO_PKG_VERSION"));
                return Ok(Parsed::Print(version));
            }
            Long("help") | Short('h') => return Ok(Parsed::Print(USAGE.to_string())),
            _ => return Err(arg.unexpected()),
        }
    }
    let location = match (config, dev) {
        (Some(_), true) => return Err("--dev and --config cannot be used together".into()),
        (Some(path), false) => Location::File(path),
        (None, true) => Location::Dev(PathBuf::from(pki::DEV_DIR)),
        (None, false) => Location::Default,
    };
    Ok(Parsed::Run(Options {
        location,
        check_config,
    }))
}

#[cfg(feature = "count-allocs")]
#[global_allocator]
static ALLOCATOR: vitals::alloc_count::Counting = vitals::alloc_count::Counting;

fn main() -> ExitCode {
    // A statfs worker for FUSE mounts (src/sampler/filesystems.rs), started by the daemon:
    // before anything else, with nothing of the daemon set up.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(vitals::sampler::WORKER_ARG))
    {
        return vitals::sampler::worker_main();
    }
    let options = match parse_args() {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Print(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("vitalsd: {err}\n\n{USAGE}");
            return ExitCode::from(exit::USAGE);
        }
    };
    // glibc's per-thread cache set small, which only an exec can do: before anything
    // else, so nothing is done twice.
    let reexec = if options.check_config {
        Ok(())
    } else {
        vitals::malloc::reexec()
    };
    // At the default level until the config says otherwise.
    let telemetry = Arc::new(telemetry::init());
    if let Err(err) = reexec {
        tracing::info!(
            "running with glibc's default per-thread malloc cache: executing again with \
             GLIBC_TUNABLES=glibc.malloc.tcache_count={} failed: {err}",
            vitals::malloc::TCACHE_COUNT
        );
    }
    let started = vitals::daemon::start(options, telemetry);
    #[cfg(feature = "count-allocs")]
    {
        let (allocations, bytes) = vitals::alloc_count::counts();
        eprintln!("allocations: {allocations} ({bytes} bytes)");
    }
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let reason = chain(&err);
            tracing::error!("{reason}");
            systemd::notify(&format!("STATUS=cannot start: {reason}"));
            ExitCode::from(StartError::exit_code(&err))
        }
    }
}

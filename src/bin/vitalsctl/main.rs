//! vitalsctl: the client of vitalsd. Parses the command line, runs one command, prints
//! what it found and exits with grpc_health_probe's codes (0 ok, 1 arguments or TLS files,
//! 2 connection, 3 call, 4 not serving). Each command's flags, usage, run and output are in
//! its own file (`probe.rs`, `echo.rs`, `metrics.rs`, `bench.rs`, `certs.rs`, `rotate.rs`); what they
//! share is in `flags.rs`; the work is in `vitals::client`. Invoked as `grpc_health_probe`
//! (a symlink), vitalsctl is the probe.
#![forbid(unsafe_code)]

mod bench;
mod certs;
mod echo;
mod flags;
mod metrics;
mod probe;
mod rotate;

use std::{ffi::OsString, process::ExitCode};

use lexopt::{Parser, ValueExt};
use vitals::{client::exit, error::chain};

use flags::{Common, Flag, Table, invalid};

/// What to do.
#[derive(Debug)]
enum Command {
    /// Print this usage text.
    Help(&'static str),
    /// Print this usage text on stderr and exit 1, as grpc_health_probe answers `-h`.
    DropInHelp(&'static str),
    /// Print the version.
    Version,
    Probe(probe::Args),
    Echo(echo::Args),
    Metrics(metrics::Args),
    Bench(bench::Args),
    Certs(certs::Args),
    Rotate(rotate::Args),
}

/// Every long flag of every command, for [`flags::normalise`], which reads the whole line
/// before the command is known.
const FLAGS: &[Table] = &[
    flags::FLAGS,
    probe::FLAGS,
    echo::FLAGS,
    metrics::FLAGS,
    bench::FLAGS,
    certs::FLAGS,
    rotate::FLAGS,
];

/// The overview: the commands and the connection options.
const USAGE: &str = "\
usage: vitalsctl [connection options] <command> [options]

commands:
  probe     grpc.health.v1 Check (a grpc_health_probe drop-in), --watch, --list, or a sweep
  echo      call vitals.echo.v1.Echo/Echo: metadata, retries, balancing, a latency summary
  metrics   one metrics snapshot as a table or JSON, or a live view
  bench     a load generator for vitals.echo.v1.Echo/Echo
  certs     certs init: write a dev CA, server and client certificates
  rotate    renew the server's certificate now from its pki (vitals.admin.v1.Admin/Rotate)

connection options (before or after the command; one dash or two):
  --dev                  the dev PKI in certs/dev and 127.0.0.1:50051 (mutual TLS)
  --addr HOST:PORT       the server; repeat it (or give a name with several addresses)
                         to balance echo calls or to sweep probes
  --tls                  use TLS (implied for echo, metrics and bench by any --tls-* flag)
  --tls-ca-cert FILE     CA bundle for the server certificate (default: the system's)
  --tls-client-cert FILE client certificate (PEM), with --tls-client-key
  --tls-client-key FILE  its key (PEM, mode 0600)
  --tls-server-name NAME name to check in the server certificate
  --tls-no-verify        accept any server certificate (INSECURE)
  --plaintext            no TLS (the health-only listener)
  --connect-timeout DUR  TCP + TLS + HTTP/2 (default: probe 1s, others 5s)
  --timeout DUR          deadline of a call (also --rpc-timeout; default: probe 1s, others 5s)
  -H, --rpc-header 'K: V'  request metadata, repeatable
  --user-agent TEXT      user-agent prefix
  --json                 machine-readable output
  -v, --verbose          say what happens (connection, each attempt)
  --version              print the version

exit codes: 0 ok, 1 bad arguments or TLS files, 2 connection failed or timed out,
            3 call failed or timed out, 4 not serving

examples:
  vitalsctl --dev probe                                  # status: SERVING, exit 0
  vitalsctl probe -addr=10.0.0.7:50052                   # grpc_health_probe style
  vitalsctl --dev echo hello -H 'x-request-id: 42'
  vitalsctl --dev metrics --watch 2s
  vitalsctl --dev bench --connections 16 --streams 32 --duration 10s
  vitalsctl certs init --out certs/dev

`vitalsctl help COMMAND` or `vitalsctl COMMAND --help` shows a command's options and examples.";

/// The usage text of a command, or the overview.
fn usage(command: Option<&str>) -> &'static str {
    match command {
        Some("probe") => probe::USAGE,
        Some("echo") => echo::USAGE,
        Some("metrics") => metrics::USAGE,
        Some("bench") => bench::USAGE,
        Some("certs") => certs::USAGE,
        Some("rotate") => rotate::USAGE,
        _ => USAGE,
    }
}

/// Parses the whole command line, program name first: the connection flags up to the
/// command, then the command's own.
fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Command, flags::Error> {
    let mut argv: Vec<OsString> = argv.into_iter().collect();
    let program = if argv.is_empty() {
        OsString::new()
    } else {
        argv.remove(0)
    };
    let as_probe = std::path::Path::new(&program)
        .file_name()
        .is_some_and(|name| name == "grpc_health_probe");
    if as_probe {
        argv.insert(0, "probe".into());
    }
    let parsed = parse_command(argv);
    match parsed {
        Err(flags::Error::Version) => Ok(Command::Version),
        Ok(Command::Help(text)) if as_probe => Ok(Command::DropInHelp(text)),
        Ok(Command::Probe(args)) if as_probe => Ok(Command::Probe(probe::Args {
            drop_in: true,
            ..args
        })),
        other => other,
    }
}

/// Parses the command word and its flags (the program name taken off).
fn parse_command(argv: Vec<OsString>) -> Result<Command, flags::Error> {
    let mut parser = Parser::from_args(flags::normalise(argv, FLAGS));
    let mut common = Common::default();
    let command = loop {
        match flags::next(&mut parser)? {
            None => return Ok(Command::Help(USAGE)),
            Some(flag) if flag.is_help() => return Ok(Command::Help(USAGE)),
            Some(Flag::Value(v)) => break v.string()?,
            Some(flag) => {
                if !common.take(&flag, &mut parser)? {
                    return Err(flag.unexpected("vitalsctl"));
                }
            }
        }
    };
    let parsed = match command.as_str() {
        "probe" => probe::parse(parser, common)?.map(Command::Probe),
        "echo" => echo::parse(parser, common)?.map(Command::Echo),
        "metrics" => metrics::parse(parser, common)?.map(Command::Metrics),
        "bench" => bench::parse(parser, common)?.map(Command::Bench),
        "certs" => certs::parse(parser)?.map(Command::Certs),
        "rotate" => rotate::parse(parser, common)?.map(Command::Rotate),
        "help" => {
            let topic = flags::next(&mut parser)?.and_then(|f| match f {
                Flag::Value(v) => v.into_string().ok(),
                _ => None,
            });
            Some(Command::Help(usage(topic.as_deref())))
        }
        other => return Err(invalid(format!("unknown command `{other}`"))),
    };
    // `None`: the command's flags asked for its usage.
    Ok(parsed.unwrap_or_else(|| Command::Help(usage(Some(&command)))))
}

fn main() -> ExitCode {
    let command = match parse(std::env::args_os()) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("error: {err}");
            eprintln!("(`vitalsctl help` shows the usage)");
            return ExitCode::from(exit::ARGS);
        }
    };
    let code = match command {
        Command::Help(text) => {
            println!("{text}");
            exit::OK
        }
        Command::DropInHelp(text) => {
            eprintln!("{text}");
            exit::ARGS
        }
        Command::Version => {
            println!("vitalsctl {}", env!("CARGO_PKG_VERSION"));
            exit::OK
        }
        Command::Certs(args) => certs::run(&args),
        Command::Bench(args) => vitals::runtime::build(args.threads)
            .expect("a runtime builds")
            .block_on(bench::run(args)),
        command => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime builds")
            .block_on(async move {
                match command {
                    Command::Probe(args) => probe::run(args).await,
                    Command::Echo(args) => echo::run(args).await,
                    Command::Metrics(args) => metrics::run(args).await,
                    Command::Rotate(args) => rotate::run(args).await,
                    _ => unreachable!("handled above"),
                }
            }),
    };
    ExitCode::from(code)
}

/// Says why there is no connection on stderr, and returns its exit code (1 or 2).
fn failed(err: &vitals::client::Error) -> u8 {
    eprintln!("error: {}", chain(err));
    err.exit_code()
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command line as the shell would split it, program name first.
    pub fn argv(line: &str) -> Vec<OsString> {
        std::iter::once("vitalsctl")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect()
    }

    /// The message a command line that does not parse is refused with.
    pub fn error(line: &str) -> String {
        match parse(argv(line)) {
            Err(e) => e.to_string(),
            Ok(other) => panic!("{line}: parsed as {other:?}"),
        }
    }

    /// Named grpc_health_probe, vitalsctl is the probe.
    #[test]
    fn as_grpc_health_probe() {
        let argv = ["/usr/bin/grpc_health_probe", "-addr=h:1"].map(OsString::from);
        assert!(matches!(parse(argv), Ok(Command::Probe(p)) if p.conn.addrs == ["h:1"]));
    }

    /// A flag name takes a value in every command or in none, since the line is normalised
    /// before the command is known.
    #[test]
    fn flag_tables_agree() {
        for (name, takes) in FLAGS.iter().flat_map(|t| t.iter()) {
            for (other, other_takes) in FLAGS.iter().flat_map(|t| t.iter()) {
                assert!(name != other || takes == other_takes, "--{name}");
            }
        }
    }

    /// `help COMMAND`, `COMMAND -h` and `COMMAND --help` show the command's usage; an
    /// unknown topic, the overview.
    #[test]
    fn help_topics() {
        let help = |line: &str| match parse(argv(line)) {
            Ok(Command::Help(text)) => text,
            other => panic!("{line}: {other:?}"),
        };
        for (command, text) in [
            ("probe", probe::USAGE),
            ("certs", certs::USAGE),
            ("rotate", rotate::USAGE),
        ] {
            assert_eq!(help(&format!("help {command}")), text);
            assert_eq!(help(&format!("{command} -h")), text);
            assert_eq!(help(&format!("--dev {command} --help")), text);
        }
        for line in ["", "-h", "help", "help nope"] {
            assert_eq!(help(line), USAGE, "{line:?}");
        }
    }
}

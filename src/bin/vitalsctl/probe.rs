//! `vitalsctl probe`: grpc.health.v1 Check (a grpc_health_probe drop-in, with its flags,
//! rules, messages and exit codes), Watch, List, and a sweep over many targets: the flags,
//! the usage, and the output. The health calls are `vitals::client::probe`'s.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use lexopt::{Parser, ValueExt};
use vitals::{
    client::{
        Trust, exit,
        probe::{self, Outcome, Probe},
    },
    proto::health::health_check_response::ServingStatus,
};

use crate::flags::{self, Common, ConnArgs, Error, Flag, Table, boolean, invalid, number, text};

/// probe's own long flags, for [`flags::normalise`].
pub const FLAGS: Table = &[
    ("concurrency", true),
    ("gzip", false),
    ("list", false),
    ("service", true),
    ("targets", true),
    ("watch", false),
];

/// What `vitalsctl help probe` and `vitalsctl probe --help` print.
pub const USAGE: &str = "\
usage: vitalsctl probe [options] [TARGET...]

grpc.health.v1 Check, with grpc_health_probe's flags, rules and exit codes: -addr is required;
-tls-* flags need -tls; -tls-no-verify excludes -tls-ca-cert and -tls-server-name; a client
certificate needs its key. Exit 0 SERVING, 1 bad arguments or TLS files, 2 connection failed or
timed out, 3 RPC failed or timed out (or no health service), 4 not serving. Run through a
symlink named grpc_health_probe it also writes the status to stderr and answers -h with exit 1,
as grpc_health_probe does.

  -addr HOST:PORT        the server (required unless --dev or targets are given); a unix
                         socket as unix:/path, unix:///path or unix-abstract:NAME
  -service NAME          the service to check (default \"\": the server as a whole)
  -connect-timeout DUR   how long to keep trying to connect, with gRPC's backoff between
                         attempts (1s, then x1.6, each ±20%), as grpc_health_probe does;
                         default 1s
  -rpc-timeout DUR       default 1s
  -tls, -tls-ca-cert, -tls-client-cert, -tls-client-key, -tls-server-name, -tls-no-verify
  -rpc-header 'K: V'     repeatable            -user-agent TEXT   -gzip   -v   -version
  --watch                follow Watch and print every status change until the stream ends
  --list                 List every service with its status (exit 4 if any is not SERVING)
  TARGET..., --targets FILE, several -addr
                         sweep: probe each (one per line in FILE, # comments), print a table
                         (or --json); exit 0 only if all serve, else 2, 3 or 4, the worst first
  --concurrency N        targets probed at once in a sweep (default 16)

examples:
  vitalsctl probe -addr=127.0.0.1:50052                       # the plaintext health listener
  vitalsctl probe -addr 10.0.0.7:50051 -tls -tls-ca-cert ca.crt \\
      -tls-client-cert client.crt -tls-client-key client.key -service vitals.echo.v1.Echo
  vitalsctl --dev probe --watch
  vitalsctl --dev probe --list
  vitalsctl probe --tls --tls-ca-cert ca.crt --tls-client-cert c.crt --tls-client-key c.key \\
      --targets fleet.txt --concurrency 64 --json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One Check; the exit code says the status.
    Check,
    /// Follow Watch and print every change.
    Watch,
    /// List every service and its status.
    List,
}

#[derive(Debug)]
pub struct Args {
    pub conn: ConnArgs,
    /// What each probe sends: the service, the deadline, the headers, gzip.
    pub probe: Probe,
    /// More targets, one per line.
    pub targets_file: Option<PathBuf>,
    pub mode: Mode,
    /// Targets probed at once in a sweep.
    pub concurrency: usize,
    /// Run as `grpc_health_probe`: the status line goes to stderr, as its Go log writes it.
    pub drop_in: bool,
}

/// Reads probe's flags after the command word; `None` when they ask for the usage.
pub fn parse(mut parser: Parser, mut common: Common) -> Result<Option<Args>, Error> {
    let mut service = String::new();
    let (mut watch, mut list, mut gzip) = (false, false, false);
    let mut targets_file = None;
    let mut concurrency = 16usize;
    while let Some(flag) = flags::next(&mut parser)? {
        if flag.is_help() {
            return Ok(None);
        }
        match &flag {
            Flag::Long(name) => match name.as_str() {
                "service" => service = text(&mut parser)?,
                "watch" => watch = boolean(&mut parser, name)?,
                "list" => list = boolean(&mut parser, name)?,
                "gzip" => gzip = boolean(&mut parser, name)?,
                "targets" => targets_file = Some(PathBuf::from(parser.value()?)),
                "concurrency" => concurrency = number(&mut parser, name)?,
                _ if common.take(&flag, &mut parser)? => {}
                _ => return Err(flag.unexpected("probe")),
            },
            Flag::Value(v) => common.addrs.push(v.clone().string()?),
            Flag::Short(_) if common.take(&flag, &mut parser)? => {}
            Flag::Short(_) => return Err(flag.unexpected("probe")),
        }
    }
    if common.addrs.is_empty() && targets_file.is_none() && !common.dev {
        return Err(invalid("-addr not specified"));
    }
    let rpc_timeout = common.timeout("rpc-timeout", Duration::from_secs(1))?;
    let conn = common.conn(true, Duration::from_secs(1), targets_file.is_none())?;
    let several = conn.addrs.len() > 1 || targets_file.is_some();
    let mode = match (watch, list) {
        (true, true) => return Err(invalid("--watch and --list do not go together")),
        (true, false) => Mode::Watch,
        (false, true) => Mode::List,
        (false, false) => Mode::Check,
    };
    if several && mode != Mode::Check {
        return Err(invalid("--watch and --list take one target"));
    }
    if mode == Mode::List && !service.is_empty() {
        return Err(invalid("--list lists every service; it takes no -service"));
    }
    if concurrency == 0 {
        return Err(invalid("--concurrency must be at least 1"));
    }
    let probe = Probe {
        service,
        rpc_timeout,
        headers: conn.headers.clone(),
        gzip,
    };
    Ok(Some(Args {
        conn,
        probe,
        targets_file,
        mode,
        concurrency,
        drop_in: false,
    }))
}

/// Probes, prints what it found, and returns grpc_health_probe's exit code.
pub async fn run(args: Args) -> u8 {
    let conn = &args.conn;
    let probe = &args.probe;
    let dialer = match conn.dialer() {
        Ok(d) => d,
        Err(code) => return code,
    };
    let mut targets = conn.addrs.clone();
    if let Some(file) = &args.targets_file {
        match probe::read_targets(file) {
            Ok(more) => targets.extend(more),
            Err(err) => {
                eprintln!("error: reading targets from {}: {err}", file.display());
                return exit::ARGS;
            }
        }
    }
    if targets.is_empty() {
        eprintln!("error: -addr not specified (and no targets in the file)");
        return exit::ARGS;
    }
    if conn.verbose {
        eprintln!("parsed options:");
        eprintln!(
            "> addr={} conn_timeout={:?} rpc_timeout={:?}",
            targets.join(","),
            conn.connect_timeout,
            probe.rpc_timeout
        );
        eprintln!("> tls={}", conn.tls.is_some());
        if let Some(tls) = &conn.tls {
            let ca = match &tls.trust {
                Trust::Ca(path) => path.display().to_string(),
                Trust::System => "(system)".into(),
                Trust::Anything => String::new(),
            };
            let (cert, key) = tls
                .identity
                .as_ref()
                .map_or((String::new(), String::new()), |(c, k)| {
                    (c.display().to_string(), k.display().to_string())
                });
            eprintln!("  > no-verify={}", tls.trust == Trust::Anything);
            eprintln!("  > ca-cert={ca}");
            eprintln!("  > client-cert={cert}");
            eprintln!("  > client-key={key}");
            eprintln!(
                "  > server-name={}",
                conn.server_name.as_deref().unwrap_or("")
            );
        }
    }
    let sweep = targets.len() > 1 || args.targets_file.is_some();
    match args.mode {
        Mode::Check if sweep => {
            let outcomes = probe.sweep(&dialer, &targets, args.concurrency).await;
            if conn.json {
                println!("{}", probe::sweep_json(&outcomes));
            } else {
                print!("{}", probe::sweep_table(&outcomes));
            }
            probe::sweep_exit_code(&outcomes)
        }
        Mode::Check => {
            if conn.verbose {
                eprintln!("establishing connection");
            }
            let outcome = probe.check(&dialer.target(&targets[0])).await;
            if conn.verbose {
                if let Some(connect) = outcome.connect {
                    eprintln!("connection established (took {connect:?})");
                }
                if let (Some(connect), Some(rpc)) = (outcome.connect, outcome.rpc) {
                    eprintln!("time elapsed: connect={connect:?} rpc={rpc:?}");
                }
            }
            report(&outcome, conn.json, args.drop_in, conn.verbose)
        }
        Mode::Watch => {
            let json = conn.json;
            let service = &probe.service;
            let outcome = probe
                .watch(&dialer.target(&targets[0]), crate::interrupted(), |status| {
                    let at = probe::timestamp(SystemTime::now());
                    if json {
                        println!("{}", serde_json::json!({"time": at, "service": service, "status": status.as_str_name()}));
                    } else if status == ServingStatus::ServiceUnknown {
                        println!("{at} status: SERVICE_UNKNOWN (the server does not know `{service}`; waiting for it)");
                    } else {
                        println!("{at} status: {}", status.as_str_name());
                    }
                    let _ = std::io::stdout().flush();
                })
                .await;
            if outcome.exit_code != exit::OK && outcome.exit_code != exit::NOT_SERVING {
                eprintln!("{}", outcome.message);
                if let Some(detail) = &outcome.detail {
                    eprintln!("{detail}");
                }
            }
            outcome.exit_code
        }
        Mode::List => {
            let (outcome, statuses) = probe.list(&dialer.target(&targets[0])).await;
            if outcome.status == "RPC_FAILED"
                || outcome.status == "UNREACHABLE"
                || outcome.status == "INVALID"
            {
                eprintln!("{}", outcome.message);
                if let Some(detail) = &outcome.detail {
                    eprintln!("{detail}");
                }
            } else if conn.json {
                let map: serde_json::Map<_, _> = statuses
                    .iter()
                    .map(|(name, s)| (name.clone(), s.as_str_name().into()))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&map).expect("serialises")
                );
            } else {
                let width = statuses
                    .iter()
                    .map(|(n, _)| n.len())
                    .max()
                    .unwrap_or(0)
                    .max(9);
                for (name, status) in &statuses {
                    let name = if name.is_empty() { "(overall)" } else { name };
                    println!("{name:<width$}  {}", status.as_str_name());
                }
            }
            outcome.exit_code
        }
    }
}

/// Prints one check's outcome: on stdout when it serves (on stderr as grpc_health_probe,
/// which writes everything through Go's log), on stderr when not. The detail of a
/// connection that timed out (the attempts and the last error) follows the message on its
/// own line; as grpc_health_probe only with -v, so its output is upstream's line alone.
fn report(outcome: &Outcome, json: bool, drop_in: bool, verbose: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(outcome).expect("serialises")
        );
    } else if outcome.exit_code == exit::OK && !drop_in {
        println!("{}", outcome.message);
    } else {
        eprintln!("{}", outcome.message);
    }
    if let Some(detail) = &outcome.detail
        && !json
        && (verbose || !drop_in)
    {
        eprintln!("{detail}");
    }
    outcome.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Command,
        tests::{argv, error},
    };

    fn probe_args(line: &str) -> Args {
        match crate::parse(argv(line)) {
            Ok(Command::Probe(p)) => p,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// One dash or two, `=` or a space: all the same flag.
    #[test]
    fn go_flag_spellings() {
        for line in [
            "probe -addr=h:1 -service=s -rpc-timeout=2s",
            "probe --addr h:1 --service s --rpc-timeout 2s",
            "probe -addr h:1 -service s -rpc-timeout 2s",
            "--addr=h:1 probe --service=s --timeout=2s",
        ] {
            let p = probe_args(line);
            assert_eq!(p.conn.addrs, ["h:1"], "{line}");
            assert_eq!(p.probe.service, "s", "{line}");
            assert_eq!(p.probe.rpc_timeout, Duration::from_secs(2), "{line}");
            assert_eq!(p.conn.connect_timeout, Duration::from_secs(1), "{line}");
            assert!(p.conn.tls.is_none(), "{line}");
        }
    }

    /// grpc_health_probe's argument rules, with its messages.
    #[test]
    fn probe_rules() {
        let cases = [
            ("probe", "-addr not specified"),
            (
                "probe -addr h:1 -connect-timeout 0s",
                "-connect-timeout must be greater than zero (specified: 0s)",
            ),
            (
                "probe -addr h:1 -rpc-timeout -1s",
                "-rpc-timeout must be greater than zero (specified: -1s)",
            ),
            (
                "probe -addr h:1 -tls-no-verify",
                "specified -tls-no-verify without specifying -tls",
            ),
            (
                "probe -addr h:1 -tls-ca-cert x",
                "specified -tls-ca-cert without specifying -tls",
            ),
            (
                "probe -addr h:1 -tls-client-cert x",
                "specified -tls-client-cert without specifying -tls",
            ),
            (
                "probe -addr h:1 -tls-server-name x",
                "specified -tls-server-name without specifying -tls",
            ),
            (
                "probe -addr h:1 -tls -tls-client-cert x",
                "specified -tls-client-cert without specifying -tls-client-key",
            ),
            (
                "probe -addr h:1 -tls -tls-client-key x",
                "specified -tls-client-key without specifying -tls-client-cert",
            ),
            (
                "probe -addr h:1 -tls -tls-no-verify -tls-ca-cert x",
                "cannot specify -tls-ca-cert with -tls-no-verify",
            ),
            (
                "probe -addr h:1 -tls -tls-no-verify -tls-server-name x",
                "cannot specify -tls-server-name with -tls-no-verify",
            ),
            ("probe -addr h:1 -nope", "unknown flag --nope"),
            ("probe -addr h:1 --watch --list", "do not go together"),
            ("probe a:1 b:2 --watch", "take one target"),
        ];
        for (line, want) in cases {
            let got = error(line);
            assert!(got.contains(want), "{line}: {got}");
        }
    }

    /// Several targets make a sweep; headers and the user agent are kept.
    #[test]
    fn sweep_targets_and_headers() {
        let p = probe_args(
            "probe a:1 b:2 --addr c:3 -rpc-header x-a:1 -H x-b:2 -user-agent kube-probe --gzip",
        );
        assert_eq!(p.conn.addrs, ["a:1", "b:2", "c:3"]);
        assert_eq!(
            p.conn.headers,
            [("x-a".into(), "1".into()), ("x-b".into(), "2".into())]
        );
        assert_eq!(p.conn.user_agent, "kube-probe");
        assert!(p.probe.gzip);
    }
}

//! vitalsctl: the client of vitalsd. Parses the command line, runs one command, prints
//! what it found and exits with grpc_health_probe's codes (0 ok, 1 arguments or TLS files,
//! 2 connection, 3 call, 4 not serving). The work is in `vitals::client`.
#![forbid(unsafe_code)]

mod args;

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use args::{BenchArgs, Command, ConnArgs, EchoArgs, MetricsArgs, ProbeArgs, ProbeMode};
use vitals::{
    client::{
        Dial, MetricsView,
        balance::Balancer,
        bench,
        echo::{self, EchoCall, Failure, Reply, Summary},
        exit,
        probe::{self, Outcome, Probe},
    },
    error::chain,
    pki::DevPki,
    proto::{
        health::health_check_response::ServingStatus,
        metrics::{SnapshotRequest, WatchRequest, metrics_client::MetricsClient},
    },
};

fn main() -> ExitCode {
    let command = match args::parse(std::env::args_os()) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("error: {err}");
            eprintln!("(`vitalsctl help` shows the usage)");
            return ExitCode::from(exit::ARGS);
        }
    };
    let code = match command {
        Command::Help(topic) => {
            println!("{}", args::usage(topic));
            exit::OK
        }
        Command::CertsInit { out, sans } => {
            match DevPki::generate(&sans).and_then(|pki| pki.write(&out)) {
                Ok(()) => {
                    println!(
                        "wrote ca.crt server.crt server.key client.crt client.key to {}",
                        out.display()
                    );
                    exit::OK
                }
                Err(err) => {
                    eprintln!("error: {err:#}");
                    exit::ARGS
                }
            }
        }
        Command::Bench(args) => vitals::runtime::build(args.threads)
            .expect("a runtime builds")
            .block_on(run_bench(args)),
        command => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime builds")
            .block_on(async move {
                match command {
                    Command::Probe(args) => run_probe(args).await,
                    Command::Echo(args) => run_echo(args).await,
                    Command::Metrics(args) => run_metrics(args).await,
                    _ => unreachable!("handled above"),
                }
            }),
    };
    ExitCode::from(code)
}

/// Reads the TLS files; a failure is exit 1, as grpc_health_probe has it.
fn dialer(conn: &ConnArgs) -> Result<Dial, u8> {
    conn.dialer().map_err(|err| {
        eprintln!(
            "error: failed to initialize tls credentials: {}",
            chain(&err)
        );
        err.exit_code()
    })
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

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

fn report(outcome: &Outcome, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(outcome).expect("serialises")
        );
    } else if outcome.exit_code == exit::OK {
        println!("{}", outcome.message);
    } else {
        eprintln!("{}", outcome.message);
    }
    outcome.exit_code
}

async fn run_probe(args: ProbeArgs) -> u8 {
    let conn = &args.conn;
    let dialer = match dialer(conn) {
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
    let probe = Probe {
        service: args.service.clone(),
        rpc_timeout: args.rpc_timeout,
        headers: conn.headers.clone(),
        gzip: args.gzip,
    };
    if conn.verbose {
        eprintln!("parsed options:");
        eprintln!(
            "> addr={} conn_timeout={:?} rpc_timeout={:?}",
            targets.join(","),
            conn.connect_timeout,
            args.rpc_timeout
        );
        eprintln!("> tls={}", conn.tls.is_some());
        if let Some(tls) = &conn.tls {
            let ca = match &tls.trust {
                vitals::client::Trust::Ca(path) => path.display().to_string(),
                vitals::client::Trust::System => "(system)".into(),
                vitals::client::Trust::Anything => String::new(),
            };
            let (cert, key) = tls
                .identity
                .as_ref()
                .map_or((String::new(), String::new()), |(c, k)| {
                    (c.display().to_string(), k.display().to_string())
                });
            eprintln!(
                "  > no-verify={}",
                tls.trust == vitals::client::Trust::Anything
            );
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
        ProbeMode::Check if sweep => {
            let outcomes = probe.sweep(&dialer, &targets, args.concurrency).await;
            if conn.json {
                println!("{}", probe::sweep_json(&outcomes));
            } else {
                print!("{}", probe::sweep_table(&outcomes));
            }
            probe::sweep_exit_code(&outcomes)
        }
        ProbeMode::Check => {
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
            report(&outcome, conn.json)
        }
        ProbeMode::Watch => {
            let json = conn.json;
            let service = args.service.clone();
            let outcome = probe
                .watch(&dialer.target(&targets[0]), interrupted(), |status| {
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
            }
            outcome.exit_code
        }
        ProbeMode::List => {
            let (outcome, statuses) = probe.list(&dialer.target(&targets[0])).await;
            if outcome.status == "RPC_FAILED"
                || outcome.status == "UNREACHABLE"
                || outcome.status == "INVALID"
            {
                eprintln!("{}", outcome.message);
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

fn print_reply(reply: &Reply, json: bool, verbose: bool) {
    if json {
        let value = serde_json::json!({
            "addr": reply.addr,
            "attempts": reply.attempts,
            "latency_ms": reply.took.as_secs_f64() * 1e3,
            "headers": echo::metadata_json(&reply.headers),
            "message": reply.message.echo_message,
            "payload_bytes": reply.message.payload.len(),
            "peer_identity": reply.message.peer_identity,
            "trailers": echo::metadata_json(&reply.trailers),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("serialises")
        );
        return;
    }
    for line in echo::metadata_lines("< ", &reply.headers) {
        println!("{line}");
    }
    println!("{}", reply.message.echo_message);
    if !reply.message.payload.is_empty() {
        println!("(payload: {} bytes)", reply.message.payload.len());
    }
    for line in echo::metadata_lines("<< ", &reply.trailers) {
        println!("{line}");
    }
    if verbose {
        eprintln!(
            "* answered by {} in {} after {} attempt(s); identity {}",
            reply.addr,
            ms(reply.took),
            reply.attempts,
            reply.message.peer_identity
        );
    }
}

fn print_failure(failure: &Failure, verbose: bool) {
    eprintln!(
        "error: echo failed: {}{} ({} attempt(s) in {}; {})",
        vitals::rpc_stats::code_name(failure.status.code()),
        match failure.status.message() {
            "" => String::new(),
            message => format!(": {message}"),
        },
        failure.attempts,
        ms(failure.took),
        failure.why
    );
    if verbose {
        for line in echo::metadata_lines("<< ", failure.status.metadata()) {
            eprintln!("{line}");
        }
    }
}

async fn run_echo(args: EchoArgs) -> u8 {
    let conn = &args.conn;
    let dialer = match dialer(conn) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let balancer = match Balancer::new(&conn.addrs, &dialer, args.lb).await {
        Ok(b) => b,
        Err(err) => {
            eprintln!("error: {}", chain(&err));
            return err.exit_code();
        }
    };
    if conn.verbose {
        eprintln!("* {} over {}", args.lb.name(), balancer.addrs().join(", "));
        if let Some(policy) = &args.retry {
            eprintln!("* retry policy: {policy}");
        }
        for (k, v) in &conn.headers {
            eprintln!("> {k}: {v}");
        }
    }
    let call = EchoCall {
        request: args.request.clone(),
        headers: conn.headers.clone(),
        compression: args.compression,
        timeout: args.timeout,
        retry: args.retry.clone(),
    };
    let mut summary = Summary::default();
    for seq in 1..=args.count {
        if seq > 1 && !args.interval.is_zero() {
            tokio::time::sleep(args.interval).await;
        }
        let verbose = conn.verbose;
        let result = echo::call(&balancer, &call, |event| {
            if verbose {
                eprintln!("* {event}");
            }
        })
        .await;
        match (&result, args.count) {
            (Ok(reply), 1) => print_reply(reply, conn.json, conn.verbose),
            (Err(failure), 1) => print_failure(failure, conn.verbose),
            (Ok(reply), _) if !conn.json => println!(
                "{}: seq={seq} time={} attempts={}",
                reply.addr,
                ms(reply.took),
                reply.attempts
            ),
            (Err(failure), _) if !conn.json => println!(
                "{}: seq={seq} failed: {}: {} ({} attempt(s); {})",
                failure.addr.as_deref().unwrap_or("-"),
                vitals::rpc_stats::code_name(failure.status.code()),
                failure.status.message(),
                failure.attempts,
                failure.why
            ),
            _ => {}
        }
        let _ = std::io::stdout().flush();
        summary.add(&result);
    }
    if args.count > 1 {
        if conn.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary.to_json()).expect("serialises")
            );
        } else {
            print!("{}", summary.to_text());
        }
    }
    balancer.close(Duration::from_millis(600)).await;
    summary.exit_code()
}

async fn run_metrics(args: MetricsArgs) -> u8 {
    let conn = &args.conn;
    let dial = match dialer(conn) {
        Ok(d) => d.target(&conn.addrs[0]),
        Err(code) => return code,
    };
    let open = match dial.open().await {
        Ok(open) => open,
        Err(err) => {
            eprintln!("error: {}", chain(&err));
            return err.exit_code();
        }
    };
    let mut client = MetricsClient::new(open.channel.clone());
    let code = match args.watch {
        None => {
            let mut request = tonic::Request::new(SnapshotRequest {});
            request.set_timeout(args.timeout);
            probe::add_headers(&mut request, &conn.headers);
            match client.snapshot(request).await {
                Ok(snapshot) if conn.json => {
                    println!("{}", vitals::client::snapshot_json(snapshot.get_ref()));
                    exit::OK
                }
                Ok(snapshot) => {
                    print!("{}", vitals::client::snapshot_table(snapshot.get_ref()));
                    exit::OK
                }
                Err(status) => {
                    eprintln!(
                        "error: metrics snapshot: {}: {}",
                        vitals::rpc_stats::code_name(status.code()),
                        status.message()
                    );
                    exit::RPC
                }
            }
        }
        Some(interval) => {
            let interval_ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
            let mut request = tonic::Request::new(WatchRequest { interval_ms });
            probe::add_headers(&mut request, &conn.headers);
            let tty = std::io::stdout().is_terminal();
            let mut view = MetricsView::default();
            let watching = async {
                let mut stream = client.watch(request).await?.into_inner();
                while let Some(snapshot) = stream.message().await? {
                    if conn.json {
                        println!("{}", serde_json::to_string(&snapshot).expect("serialises"));
                    } else {
                        let text = view.render(&snapshot);
                        if tty {
                            // Home and clear, then the new picture.
                            print!("\x1b[H\x1b[2J{text}");
                        } else {
                            println!("{text}");
                        }
                    }
                    let _ = std::io::stdout().flush();
                }
                Ok::<_, tonic::Status>(())
            };
            tokio::select! {
                ended = watching => match ended {
                    Ok(()) => exit::OK,
                    Err(status) => {
                        eprintln!("error: metrics watch: {}: {}", vitals::rpc_stats::code_name(status.code()), status.message());
                        exit::RPC
                    }
                },
                () = interrupted() => exit::OK,
            }
        }
    };
    drop(client);
    drop(open.channel);
    open.liveness.closed(Duration::from_millis(600)).await;
    code
}

async fn run_bench(args: BenchArgs) -> u8 {
    let dialer = match dialer(&args.conn) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let report = match bench::run(&args.load, &dialer).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {}", chain(&err));
            return err.exit_code();
        }
    };
    if args.conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialises")
        );
    } else {
        print!("{}", report.to_text());
    }
    let asked = args.load.status.map(vitals::rpc_stats::code_name);
    let unexpected = report.errors.keys().any(|code| Some(*code) != asked);
    if unexpected { exit::RPC } else { exit::OK }
}

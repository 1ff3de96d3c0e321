//! `vitalsctl bench`: a load generator for vitals.echo.v1.Echo/Echo (or any method with the
//! same messages), reporting requests/s, latency percentiles, errors by code and its own
//! CPU: the flags, the usage, and the output. The load is `vitals::client::bench`'s.

use std::time::Duration;

use lexopt::Parser;
use vitals::{
    client::{
        bench::{self, Load},
        exit,
    },
    rpc_stats::code_name,
};

use crate::flags::{
    self, Common, ConnArgs, Error, Flag, Table, invalid, number, parse_code, parse_duration,
    parse_size, text, value,
};

/// bench's own long flags, for [`flags::normalise`].
pub const FLAGS: Table = &[
    ("connections", true),
    ("duration", true),
    ("method", true),
    ("requests", true),
    ("size", true),
    ("status", true),
    ("streams", true),
    ("threads", true),
    ("warmup", true),
];

/// What `vitalsctl help bench` and `vitalsctl bench --help` print.
pub const USAGE: &str = "\
usage: vitalsctl bench [options]

Load for vitals.echo.v1.Echo/Echo (or --method with the same messages) on any server that
implements it: each connection is one HTTP/2 connection carrying --streams calls at a time,
each a task that loops. Prints requests/s, latency percentiles, errors by status code, and
the CPU vitalsctl itself used, so you can tell whether it was the bottleneck.

  --connections N        HTTP/2 connections (default 1)
  --streams N            calls in flight per connection (default 1)
  --requests N           stop after N calls             --duration DUR  or after this long
                         (default 10s)                  --warmup DUR    not measured (default 0)
  --size BYTES           echo_message bytes, echoed back (default 5; 4KiB works)
  --timeout DUR          deadline per call               --threads N  runtime workers
  --status CODE          ask the server to fail every call with CODE
  --method PATH          default /vitals.echo.v1.Echo/Echo
  --json                 the result as JSON

examples:
  vitalsctl --dev bench --connections 16 --streams 32 --duration 10s
  vitalsctl --dev bench --requests 100000 --size 4KiB --json
  vitalsctl bench --addr echo.example:443 --tls --duration 30s";

#[derive(Debug)]
pub struct Args {
    pub conn: ConnArgs,
    pub load: Load,
    /// Runtime workers.
    pub threads: usize,
}

/// Reads bench's flags after the command word; `None` when they ask for the usage.
pub fn parse(mut parser: Parser, mut common: Common) -> Result<Option<Args>, Error> {
    let (mut connections, mut streams, mut threads) = (1usize, 1usize, vitals::runtime::cpus());
    let (mut requests, mut duration, mut warmup) = (None, None, Duration::ZERO);
    let (mut size, mut method) = (5usize, String::from("/vitals.echo.v1.Echo/Echo"));
    let mut status = None;
    while let Some(flag) = flags::next(&mut parser)? {
        if flag.is_help() {
            return Ok(None);
        }
        match &flag {
            Flag::Long(name) => match name.as_str() {
                "connections" => connections = number(&mut parser, name)?,
                "streams" => streams = number(&mut parser, name)?,
                "requests" => requests = Some(number(&mut parser, name)?),
                "duration" => duration = Some(value(&mut parser, name, parse_duration)?),
                "warmup" => warmup = value(&mut parser, name, parse_duration)?,
                "size" => size = value(&mut parser, name, parse_size)?,
                "method" => method = text(&mut parser)?,
                "threads" => threads = number(&mut parser, name)?,
                "status" => status = Some(value(&mut parser, name, parse_code)?),
                _ if common.take(&flag, &mut parser)? => {}
                _ => return Err(flag.unexpected("bench")),
            },
            _ if common.take(&flag, &mut parser)? => {}
            _ => return Err(flag.unexpected("bench")),
        }
    }
    if connections == 0 || streams == 0 || threads == 0 {
        return Err(invalid(
            "--connections, --streams and --threads must be at least 1",
        ));
    }
    match (requests, duration) {
        (Some(_), Some(_)) => return Err(invalid("give --requests or --duration, not both")),
        (Some(0), _) => return Err(invalid("--requests must be at least 1")),
        (_, Some(d)) if d.is_zero() => return Err(invalid("--duration must be greater than zero")),
        (None, None) => duration = Some(Duration::from_secs(10)),
        _ => {}
    }
    if !method.starts_with('/') || method.matches('/').count() != 2 {
        return Err(invalid(format!(
            "--method `{method}` is not /package.Service/Method"
        )));
    }
    let timeout = match common.timeout {
        Some(_) => Some(common.timeout("timeout", Duration::ZERO)?),
        None => None,
    };
    let conn = common.conn(false, Duration::from_secs(5), true)?;
    let load = Load {
        targets: conn.addrs.clone(),
        headers: conn.headers.clone(),
        connections,
        streams,
        requests,
        duration,
        warmup,
        size,
        method,
        timeout,
        status,
    };
    Ok(Some(Args {
        conn,
        load,
        threads,
    }))
}

/// Runs the load and prints the report; 3 if any call failed other than as `--status` asked.
pub async fn run(args: Args) -> u8 {
    let dialer = match args.conn.dialer() {
        Ok(d) => d,
        Err(code) => return code,
    };
    let report = match bench::run(&args.load, &dialer).await {
        Ok(report) => report,
        Err(err) => return crate::failed(&err),
    };
    if args.conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialises")
        );
    } else {
        print!("{}", report.to_text());
    }
    let asked = args.load.status.map(code_name);
    let unexpected = report.errors.keys().any(|code| Some(*code) != asked);
    if unexpected { exit::RPC } else { exit::OK }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Command,
        tests::{argv, error},
    };

    /// Bench defaults to 10 s, and refuses a count with a duration.
    #[test]
    fn bench_limits() {
        let Ok(Command::Bench(b)) = crate::parse(argv(
            "--dev bench --connections 16 --streams 32 --size 4KiB",
        )) else {
            panic!()
        };
        assert_eq!(
            (b.load.connections, b.load.streams, b.load.size),
            (16, 32, 4096)
        );
        assert_eq!(
            (b.load.duration, b.load.requests),
            (Some(Duration::from_secs(10)), None)
        );
        assert!(error("--dev bench --requests 5 --duration 1s").contains("not both"));
    }
}

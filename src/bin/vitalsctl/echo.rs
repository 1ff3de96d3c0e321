//! `vitalsctl echo`: calls vitals.echo.v1.Echo/Echo with the echo knobs, gRPC A6 retries and
//! pick_first or round_robin over several addresses, and prints the reply or, for a run of
//! calls, a latency summary: the flags, the usage, and the output. The calls are
//! `vitals::client::echo`'s.

use std::{io::Write, time::Duration};

use lexopt::{Parser, ValueExt};
use tonic::{Code, codec::CompressionEncoding};
use vitals::{
    client::{
        balance::{Balancer, Policy},
        echo::{self, EchoCall, Failure, Reply, Summary},
        retry::{self, RetryPolicy},
    },
    proto::echo::EchoRequest,
    rpc_stats::code_name,
};

use crate::flags::{
    self, Common, ConnArgs, Error, Flag, Table, invalid, number, parse_code, parse_duration,
    parse_size, text, value,
};

/// echo's own long flags, for [`flags::normalise`].
pub const FLAGS: Table = &[
    ("backoff-multiplier", true),
    ("compress", true),
    ("count", true),
    ("delay", true),
    ("echo-header", true),
    ("echo-trailer", true),
    ("fail-attempts", true),
    ("initial-backoff", true),
    ("interval", true),
    ("lb", true),
    ("max-attempts", true),
    ("max-backoff", true),
    ("pushback", true),
    ("retry-on", true),
    ("retry-policy", true),
    ("size", true),
    ("status", true),
    ("status-message", true),
];

/// What `vitalsctl help echo` and `vitalsctl echo --help` print.
pub const USAGE: &str = "\
usage: vitalsctl echo [options] [MESSAGE...]

Calls vitals.echo.v1.Echo/Echo and prints the response headers (<), the reply and the
trailers (<<). The echo knobs make the server misbehave on purpose.

  -H 'K: V'              request metadata, repeatable
  --timeout DUR          deadline of each call, all attempts included (default 5s)
  --compress gzip|zstd   compress the request and accept a compressed response
  --count N              N calls, then a latency summary  --interval DUR  pause between calls
  --delay DUR            server waits this long          --size BYTES  response payload
  --status CODE          server answers with this code (UNAVAILABLE or 14)
  --status-message TEXT  with this message               --pushback DUR  and this pushback
  --fail-attempts N      only while grpc-previous-rpc-attempts < N
  --echo-header KEY, --echo-trailer KEY   send request metadata back as headers / trailers
retries (gRPC A6; any of these turns them on; the flags override the JSON):
  --retry-policy JSON|@FILE  a retryPolicy, or a service config with methodConfig
  --max-attempts N (default 4, at most 5)   --initial-backoff DUR (0.1s)
  --max-backoff DUR (1s)   --backoff-multiplier X (2)   --retry-on CODE,CODE (UNAVAILABLE)
balancing:
  --addr A --addr B ...  several servers, or a name with several addresses
  --lb pick_first        the first that connects; fail over in order (default)
  --lb round_robin       rotate over every address that is up

examples:
  vitalsctl --dev echo hello -H 'x-request-id: 42' --echo-trailer x-request-id
  vitalsctl --dev echo --status UNAVAILABLE --fail-attempts 2 --max-attempts 3 -v
  vitalsctl --dev echo --retry-policy @retry.json --timeout 2s
  vitalsctl --dev echo --addr 10.0.0.7:50051 --addr 10.0.0.8:50051 --lb round_robin --count 100";

#[derive(Debug)]
pub struct Args {
    pub conn: ConnArgs,
    pub lb: Policy,
    /// What each call sends, its deadline (across all its attempts) and retry policy.
    pub call: EchoCall,
    pub count: u64,
    pub interval: Duration,
}

/// Reads echo's flags after the command word; `None` when they ask for the usage.
pub fn parse(mut parser: Parser, mut common: Common) -> Result<Option<Args>, Error> {
    let mut request = EchoRequest::default();
    let mut words = Vec::new();
    let mut retry = RetryFlags::default();
    let (mut count, mut interval, mut lb, mut compression) =
        (1u64, Duration::ZERO, Policy::PickFirst, None);
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    while let Some(flag) = flags::next(&mut parser)? {
        if flag.is_help() {
            return Ok(None);
        }
        match &flag {
            Flag::Long(name) => match name.as_str() {
                "count" => count = number(&mut parser, name)?,
                "interval" => interval = value(&mut parser, name, parse_duration)?,
                "delay" => request.delay_ms = millis(value(&mut parser, name, parse_duration)?),
                "status" => {
                    request.status_code = value(&mut parser, name, parse_code)? as i32;
                }
                "status-message" => request.status_message = text(&mut parser)?,
                "fail-attempts" => request.fail_attempts = number(&mut parser, name)?,
                "pushback" => {
                    request.retry_pushback_ms = millis(value(&mut parser, name, parse_duration)?);
                }
                "size" => {
                    let size = value(&mut parser, name, parse_size)?;
                    request.response_size =
                        u32::try_from(size).map_err(|_| invalid("--size is too large"))?;
                }
                "echo-header" => request.echo_headers.push(text(&mut parser)?),
                "echo-trailer" => request.echo_trailers.push(text(&mut parser)?),
                "retry-policy" => retry.json = Some(text(&mut parser)?),
                "max-attempts" => retry.max_attempts = Some(number(&mut parser, name)?),
                "initial-backoff" => {
                    retry.initial_backoff = Some(value(&mut parser, name, parse_duration)?)
                }
                "max-backoff" => {
                    retry.max_backoff = Some(value(&mut parser, name, parse_duration)?)
                }
                "backoff-multiplier" => {
                    retry.multiplier = Some(value(&mut parser, name, |v| {
                        v.parse::<f64>()
                            .map_err(|_| format!("`{v}` is not a number"))
                    })?);
                }
                "retry-on" => retry.codes = Some(value(&mut parser, name, codes)?),
                "lb" => {
                    lb = value(&mut parser, name, |v| match v {
                        "pick_first" => Ok(Policy::PickFirst),
                        "round_robin" => Ok(Policy::RoundRobin),
                        other => Err(format!(
                            "`{other}` is not a policy: use pick_first or round_robin"
                        )),
                    })?;
                }
                "compress" => compression = Some(value(&mut parser, name, parse_compression)?),
                _ if common.take(&flag, &mut parser)? => {}
                _ => return Err(flag.unexpected("echo")),
            },
            Flag::Value(v) => words.push(v.clone().string()?),
            Flag::Short(_) if common.take(&flag, &mut parser)? => {}
            Flag::Short(_) => return Err(flag.unexpected("echo")),
        }
    }
    request.echo_message = words.join(" ");
    if count == 0 {
        return Err(invalid("--count must be at least 1"));
    }
    let timeout = common.timeout("timeout", Duration::from_secs(5))?;
    let conn = common.conn(false, Duration::from_secs(5), true)?;
    let call = EchoCall {
        request,
        headers: conn.headers.clone(),
        compression,
        timeout,
        retry: retry.policy()?,
    };
    Ok(Some(Args {
        conn,
        lb,
        call,
        count,
        interval,
    }))
}

/// Retry settings as given: a JSON policy and flags over it.
#[derive(Default)]
struct RetryFlags {
    json: Option<String>,
    max_attempts: Option<u32>,
    initial_backoff: Option<Duration>,
    max_backoff: Option<Duration>,
    multiplier: Option<f64>,
    codes: Option<Vec<Code>>,
}

impl RetryFlags {
    fn policy(self) -> Result<Option<RetryPolicy>, Error> {
        let flags = self.max_attempts.is_some()
            || self.initial_backoff.is_some()
            || self.max_backoff.is_some()
            || self.multiplier.is_some()
            || self.codes.is_some();
        let mut policy = match &self.json {
            Some(json) => {
                let text = match json.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|e| invalid(format!("--retry-policy: reading {path}: {e}")))?,
                    None => json.clone(),
                };
                RetryPolicy::from_json(&text, "vitals.echo.v1.Echo", "Echo")
                    .map_err(|e| invalid(e.to_string()))?
            }
            None if flags => RetryPolicy::default(),
            None => return Ok(None),
        };
        if let Some(n) = self.max_attempts {
            if n == 0 {
                return Err(invalid("--max-attempts must be at least 1"));
            }
            policy.max_attempts = n.min(retry::MAX_ATTEMPTS_CAP);
        }
        let positive = |d: Option<Duration>, flag: &str| match d {
            Some(d) if d.is_zero() => Err(invalid(format!("--{flag} must be greater than zero"))),
            other => Ok(other),
        };
        if let Some(d) = positive(self.initial_backoff, "initial-backoff")? {
            policy.initial_backoff = d;
        }
        if let Some(d) = positive(self.max_backoff, "max-backoff")? {
            policy.max_backoff = d;
        }
        if let Some(m) = self.multiplier {
            if m.is_nan() || m <= 0.0 {
                return Err(invalid("--backoff-multiplier must be greater than zero"));
            }
            policy.backoff_multiplier = m;
        }
        if let Some(codes) = self.codes {
            policy.retryable = codes;
        }
        Ok(Some(policy))
    }
}

fn codes(text: &str) -> Result<Vec<Code>, String> {
    let codes = text
        .split(',')
        .filter(|c| !c.trim().is_empty())
        .map(parse_code)
        .collect::<Result<Vec<_>, _>>()?;
    if codes.is_empty() {
        return Err("give at least one status code".into());
    }
    Ok(codes)
}

fn parse_compression(text: &str) -> Result<CompressionEncoding, String> {
    match text {
        "gzip" => Ok(CompressionEncoding::Gzip),
        "zstd" => Ok(CompressionEncoding::Zstd),
        other => Err(format!("`{other}` is not a compression: use gzip or zstd")),
    }
}

/// Makes the calls and prints each reply, or a line per call and a summary; 0 when all
/// succeeded, 2 when every failure was for want of a connection, else 3.
pub async fn run(args: Args) -> u8 {
    let conn = &args.conn;
    let dialer = match conn.dialer() {
        Ok(d) => d,
        Err(code) => return code,
    };
    let balancer = match Balancer::new(&conn.addrs, &dialer, args.lb).await {
        Ok(b) => b,
        Err(err) => return crate::failed(&err),
    };
    if conn.verbose {
        eprintln!("* {} over {}", args.lb.name(), balancer.addrs().join(", "));
        if let Some(policy) = &args.call.retry {
            eprintln!("* retry policy: {policy}");
        }
        for (k, v) in &conn.headers {
            eprintln!("> {k}: {v}");
        }
    }
    let mut summary = Summary::default();
    for seq in 1..=args.count {
        if seq > 1 && !args.interval.is_zero() {
            tokio::time::sleep(args.interval).await;
        }
        let verbose = conn.verbose;
        let result = echo::call(&balancer, &args.call, |event| {
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
                code_name(failure.status.code()),
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

/// One reply: headers (`<`), the message, trailers (`<<`), or all of it as JSON.
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

/// One failed call, on stderr; its trailers too with `-v`.
fn print_failure(failure: &Failure, verbose: bool) {
    eprintln!(
        "error: echo failed: {}{} ({} attempt(s) in {}; {})",
        code_name(failure.status.code()),
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

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, tests::argv};

    /// Echo: knobs, and a retry policy from flags over the A6 defaults.
    #[test]
    fn echo_knobs_and_retry_flags() {
        let line = "--dev echo hello world --status unavailable --fail-attempts 2 --pushback 250ms \
                    --size 4KiB --delay 1s --max-attempts 9 --retry-on UNAVAILABLE,14,aborted \
                    --lb round_robin --count 3 --compress zstd";
        let Ok(Command::Echo(e)) = crate::parse(argv(line)) else {
            panic!()
        };
        assert_eq!(e.call.request.echo_message, "hello world");
        assert_eq!(e.call.request.status_code, Code::Unavailable as i32);
        assert_eq!(
            (
                e.call.request.fail_attempts,
                e.call.request.retry_pushback_ms
            ),
            (2, 250)
        );
        assert_eq!(
            (e.call.request.response_size, e.call.request.delay_ms),
            (4096, 1000)
        );
        let retry = e.call.retry.unwrap();
        assert_eq!(retry.max_attempts, 5);
        assert_eq!(
            retry.retryable,
            [Code::Unavailable, Code::Unavailable, Code::Aborted]
        );
        assert_eq!(retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(e.lb, Policy::RoundRobin);
        assert_eq!(e.count, 3);
        assert_eq!(e.call.compression, Some(CompressionEncoding::Zstd));
        let Ok(Command::Echo(plain)) = crate::parse(argv("--dev echo hi")) else {
            panic!()
        };
        assert!(plain.call.retry.is_none());
    }
}

//! The command line, in two stages: flags as given, then typed commands.
//!
//! `probe` is a drop-in for grpc_health_probe, whose flags are Go flags: one dash or two,
//! `-flag=value` or `-flag value`, booleans as `-tls` or `-tls=false`. [`normalise`] turns
//! single-dash long flags into double-dash ones before lexopt reads them (lexopt would read
//! `-addr` as `-a -d -d -r`), so every command accepts both spellings. Invoked as
//! `grpc_health_probe` (a symlink), vitalsctl is the probe.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use lexopt::{Arg, Parser, ValueExt};
use tonic::{Code, codec::CompressionEncoding, metadata::MetadataKey};

use vitals::{
    client::{
        Dial, Error, TlsOptions, Trust,
        balance::Policy,
        bench,
        retry::{self, RetryPolicy},
    },
    pki::{DEV_ADDR, DEV_DIR},
};

#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Parse(#[from] lexopt::Error),
}

fn invalid(message: impl Into<String>) -> ArgsError {
    ArgsError::Invalid(message.into())
}

/// What to do.
#[derive(Debug)]
pub enum Command {
    /// Print the usage of a command, or the overview.
    Help(Option<&'static str>),
    Probe(ProbeArgs),
    Echo(EchoArgs),
    Metrics(MetricsArgs),
    Bench(BenchArgs),
    CertsInit {
        out: PathBuf,
        sans: Vec<String>,
    },
}

/// How to reach the server(s), common to every command.
#[derive(Debug, Clone)]
pub struct ConnArgs {
    /// `host:port` targets in the order given.
    pub addrs: Vec<String>,
    /// `None` for plaintext.
    pub tls: Option<TlsOptions>,
    pub server_name: Option<String>,
    pub connect_timeout: Duration,
    pub user_agent: String,
    /// Request metadata, lowercase keys.
    pub headers: Vec<(String, String)>,
    pub verbose: bool,
    pub json: bool,
}

impl ConnArgs {
    /// Reads the TLS files once; the result is dialled per target with [`Dial::target`].
    pub fn dialer(&self) -> Result<Dial, Error> {
        let mut dial = Dial::plaintext("");
        if let Some(tls) = &self.tls {
            dial.tls = Some(std::sync::Arc::new(tls.client_config()?));
        }
        dial.server_name = self.server_name.clone();
        dial.connect_timeout = self.connect_timeout;
        dial.user_agent = Some(self.user_agent.clone());
        Ok(dial)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    /// One Check; the exit code says the status.
    Check,
    /// Follow Watch and print every change.
    Watch,
    /// List every service and its status.
    List,
}

#[derive(Debug)]
pub struct ProbeArgs {
    pub conn: ConnArgs,
    /// More targets, one per line.
    pub targets_file: Option<PathBuf>,
    pub service: String,
    pub rpc_timeout: Duration,
    pub gzip: bool,
    pub mode: ProbeMode,
    /// Targets probed at once in a sweep.
    pub concurrency: usize,
}

#[derive(Debug)]
pub struct EchoArgs {
    pub conn: ConnArgs,
    pub lb: Policy,
    pub request: vitals::proto::echo::EchoRequest,
    pub compression: Option<CompressionEncoding>,
    /// The deadline of each call, across all its attempts.
    pub timeout: Duration,
    pub retry: Option<RetryPolicy>,
    pub count: u64,
    pub interval: Duration,
}

#[derive(Debug)]
pub struct MetricsArgs {
    pub conn: ConnArgs,
    pub timeout: Duration,
    /// Follow the Watch stream at this interval.
    pub watch: Option<Duration>,
}

#[derive(Debug)]
pub struct BenchArgs {
    pub conn: ConnArgs,
    pub load: bench::Load,
    /// Runtime workers.
    pub threads: usize,
}

// ------------------------------------------------------------------------------------------
// Usage

pub const USAGE: &str = "\
usage: vitalsctl [connection options] <command> [options]

commands:
  probe     grpc.health.v1 Check (a grpc_health_probe drop-in), --watch, --list, or a sweep
  echo      call vitals.echo.v1.Echo/Echo: metadata, retries, balancing, a latency summary
  metrics   one metrics snapshot as a table or JSON, or a live view
  bench     a load generator for vitals.echo.v1.Echo/Echo
  certs     certs init: write a dev CA, server and client certificates

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

pub const PROBE_USAGE: &str = "\
usage: vitalsctl probe [options] [TARGET...]

grpc.health.v1 Check, with grpc_health_probe's flags, rules and exit codes: -addr is required;
-tls-* flags need -tls; -tls-no-verify excludes -tls-ca-cert and -tls-server-name; a client
certificate needs its key. Exit 0 SERVING, 1 bad arguments or TLS files, 2 connection failed or
timed out, 3 RPC failed or timed out (or no health service), 4 not serving.

  -addr HOST:PORT        the server (required unless --dev or targets are given)
  -service NAME          the service to check (default \"\": the server as a whole)
  -connect-timeout DUR   default 1s            -rpc-timeout DUR   default 1s
  -tls, -tls-ca-cert, -tls-client-cert, -tls-client-key, -tls-server-name, -tls-no-verify
  -rpc-header 'K: V'     repeatable            -user-agent TEXT   -gzip   -v
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

pub const ECHO_USAGE: &str = "\
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

pub const METRICS_USAGE: &str = "\
usage: vitalsctl metrics [--json] [--watch [INTERVAL]]

  --json                 the snapshot as JSON (one line per snapshot with --watch)
  --watch [INTERVAL]     a live view, refreshed every INTERVAL (default 1s; the server raises
                         it to its sampling interval), with RPC rates between snapshots

examples:
  vitalsctl --dev metrics
  vitalsctl --dev metrics --json | jq .memory
  vitalsctl --dev metrics --watch 2s";

pub const BENCH_USAGE: &str = "\
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

pub const CERTS_USAGE: &str = "\
usage: vitalsctl certs init --out DIR [--san NAME]...

Writes ca.crt, server.crt, server.key, client.crt and client.key (keys mode 0600).

examples:
  vitalsctl certs init --out certs/dev
  vitalsctl certs init --out /tmp/pki --san device.local --san 192.168.1.20";

/// The usage text of a command, or the overview.
pub fn usage(command: Option<&str>) -> &'static str {
    match command {
        Some("probe") => PROBE_USAGE,
        Some("echo") => ECHO_USAGE,
        Some("metrics") => METRICS_USAGE,
        Some("bench") => BENCH_USAGE,
        Some("certs") => CERTS_USAGE,
        _ => USAGE,
    }
}

// ------------------------------------------------------------------------------------------
// Stage one: flags as given

/// Long flags and whether they take a value, for [`normalise`].
const LONG_FLAGS: &[(&str, bool)] = &[
    ("addr", true),
    ("backoff-multiplier", true),
    ("compress", true),
    ("concurrency", true),
    ("connect-timeout", true),
    ("connections", true),
    ("count", true),
    ("delay", true),
    ("dev", false),
    ("duration", true),
    ("echo-header", true),
    ("echo-trailer", true),
    ("fail-attempts", true),
    ("gzip", false),
    ("header", true),
    ("help", false),
    ("initial-backoff", true),
    ("interval", true),
    ("json", false),
    ("lb", true),
    ("list", false),
    ("max-attempts", true),
    ("max-backoff", true),
    ("method", true),
    ("out", true),
    ("plaintext", false),
    ("pushback", true),
    ("requests", true),
    ("retry-on", true),
    ("retry-policy", true),
    ("rpc-header", true),
    ("rpc-timeout", true),
    ("san", true),
    ("service", true),
    ("size", true),
    ("status", true),
    ("status-message", true),
    ("streams", true),
    ("targets", true),
    ("threads", true),
    ("timeout", true),
    ("tls", false),
    ("tls-ca-cert", true),
    ("tls-client-cert", true),
    ("tls-client-key", true),
    ("tls-no-verify", false),
    ("tls-server-name", true),
    ("user-agent", true),
    ("verbose", false),
    ("warmup", true),
    // `--watch` takes an optional value (metrics), attached or next.
    ("watch", false),
];

/// Rewrites Go-style single-dash long flags (`-addr=x`, `-tls`) as double-dash ones. Only
/// known flag names are touched, never a flag's value, and nothing after `--`.
pub fn normalise(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_value = false;
    let mut rest = false;
    for arg in args {
        if rest || std::mem::take(&mut skip_value) {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        let dashes = text.len() - text.trim_start_matches('-').len();
        let body = &text[dashes.min(2)..];
        let (name, attached) = match body.split_once('=') {
            Some((name, _)) => (name, true),
            None => (body, false),
        };
        let takes_value = LONG_FLAGS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        // `-Hk:v` is the short header flag with its value attached; other single-dash words
        // are long flags (unknown ones then get a clear "unknown flag --name").
        let long = match dashes {
            1 => {
                name.len() > 1
                    && !name.starts_with('H')
                    && !name.starts_with(|c: char| c.is_ascii_digit())
            }
            2 => takes_value.is_some(),
            _ => false,
        };
        if long {
            skip_value = takes_value == Some(true) && !attached;
            out.push(format!("--{body}").into());
        } else {
            out.push(arg);
        }
    }
    out
}

/// A Go duration (`1s`, `500ms`, `1m30s`, `-1s`, `0`) in the config's grammar
/// ([`vitals::config::units`]). Negative values come back as zero, as Go's flags allow them
/// (callers refuse zero where it makes no sense).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (negative, d) = vitals::config::units::parse_signed_duration(text)?;
    Ok(if negative { Duration::ZERO } else { d })
}

/// A byte count in the config's grammar: `4096`, `4KiB`, `1MiB`, `5B`, `4k`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let n = vitals::config::units::parse_size(text)?;
    usize::try_from(n).map_err(|_| format!("`{text}` is out of range"))
}

/// A Go boolean, as `-flag=value` gives it.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("`{other}` is not a boolean")),
    }
}

/// `key: value` metadata; the key must be a valid ASCII metadata key.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header `{text}` is not `key: value`"))?;
    let key = key.trim().to_ascii_lowercase();
    MetadataKey::<tonic::metadata::Ascii>::from_bytes(key.as_bytes()).map_err(|_| {
        format!("`{key}` is not a metadata key (lowercase ASCII, not ending in -bin)")
    })?;
    Ok((key, value.trim().to_string()))
}

fn parse_compression(text: &str) -> Result<CompressionEncoding, String> {
    match text {
        "gzip" => Ok(CompressionEncoding::Gzip),
        "zstd" => Ok(CompressionEncoding::Zstd),
        other => Err(format!("`{other}` is not a compression: use gzip or zstd")),
    }
}

/// A flag or a value, owned, so the parser can be borrowed again for the flag's value.
enum Flag {
    Long(String),
    Short(char),
    Value(OsString),
}

impl Flag {
    fn unexpected(&self, command: &str) -> ArgsError {
        match self {
            Flag::Long(name) => invalid(format!("{command}: unknown flag --{name}")),
            Flag::Short(c) => invalid(format!("{command}: unknown flag -{c}")),
            Flag::Value(v) => invalid(format!(
                "{command}: unexpected argument {}",
                v.to_string_lossy()
            )),
        }
    }
}

fn next(parser: &mut Parser) -> Result<Option<Flag>, ArgsError> {
    Ok(parser.next()?.map(|arg| match arg {
        Arg::Long(name) => Flag::Long(name.to_string()),
        Arg::Short(c) => Flag::Short(c),
        Arg::Value(v) => Flag::Value(v),
    }))
}

fn text(parser: &mut Parser) -> Result<String, ArgsError> {
    Ok(parser.value()?.string()?)
}

fn value<T>(
    parser: &mut Parser,
    flag: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ArgsError> {
    let v = text(parser)?;
    parse(&v).map_err(|e| invalid(format!("--{flag}: {e}")))
}

fn number<T: std::str::FromStr>(parser: &mut Parser, flag: &str) -> Result<T, ArgsError> {
    value(parser, flag, |v| {
        v.parse()
            .map_err(|_| format!("`{v}` is not a whole number"))
    })
}

/// A boolean flag: `--tls`, or `--tls=false`.
fn boolean(parser: &mut Parser, flag: &str) -> Result<bool, ArgsError> {
    match parser.optional_value() {
        None => Ok(true),
        Some(v) => {
            let v = v.string()?;
            parse_bool(&v).map_err(|e| invalid(format!("--{flag}: {e}")))
        }
    }
}

/// The connection flags, as given.
#[derive(Debug, Default)]
struct Common {
    dev: bool,
    addrs: Vec<String>,
    tls: Option<bool>,
    plaintext: bool,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
    no_verify: bool,
    connect_timeout: Option<(Duration, String)>,
    timeout: Option<(Duration, String)>,
    user_agent: Option<String>,
    headers: Vec<(String, String)>,
    verbose: bool,
    json: bool,
}

impl Common {
    /// Takes `flag` if it is a connection flag.
    fn take(&mut self, flag: &Flag, parser: &mut Parser) -> Result<bool, ArgsError> {
        let duration = |parser: &mut Parser, name: &str| -> Result<(Duration, String), ArgsError> {
            let v = text(parser)?;
            let d = parse_duration(&v).map_err(|e| invalid(format!("-{name}: {e}")))?;
            Ok((d, v))
        };
        match flag {
            Flag::Short('H') => {
                let h = value(parser, "rpc-header", parse_header)?;
                self.headers.push(h);
            }
            Flag::Short('v') => self.verbose = true,
            Flag::Long(name) => match name.as_str() {
                "dev" => self.dev = boolean(parser, name)?,
                "addr" => self.addrs.push(text(parser)?),
                "tls" => self.tls = Some(boolean(parser, name)?),
                "plaintext" => self.plaintext = boolean(parser, name)?,
                "tls-ca-cert" => self.ca = Some(parser.value()?.into()),
                "tls-client-cert" => self.cert = Some(parser.value()?.into()),
                "tls-client-key" => self.key = Some(parser.value()?.into()),
                "tls-server-name" => self.server_name = Some(text(parser)?),
                "tls-no-verify" => self.no_verify = boolean(parser, name)?,
                "connect-timeout" => self.connect_timeout = Some(duration(parser, name)?),
                "timeout" | "rpc-timeout" => self.timeout = Some(duration(parser, name)?),
                "user-agent" => self.user_agent = Some(text(parser)?),
                "rpc-header" | "header" => {
                    let h = value(parser, name, parse_header)?;
                    self.headers.push(h);
                }
                "verbose" => self.verbose = boolean(parser, name)?,
                "json" => self.json = boolean(parser, name)?,
                _ => return Ok(false),
            },
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Validates the TLS flags. With `probe_rules`, as grpc_health_probe: plaintext unless
    /// `-tls`, and every `-tls-*` flag needs `-tls`. Otherwise TLS is implied by any TLS
    /// flag, and giving none at all is an error (vitalsd has no plaintext echo or metrics).
    /// `default_addr`: with no address given, use 127.0.0.1:50051 (always with `--dev`).
    fn conn(
        mut self,
        probe_rules: bool,
        default_timeout: Duration,
        default_addr: bool,
    ) -> Result<ConnArgs, ArgsError> {
        if self.addrs.is_empty() && default_addr && (self.dev || !probe_rules) {
            self.addrs.push(DEV_ADDR.to_string());
        }
        if self.dev {
            let dir = std::path::Path::new(DEV_DIR);
            self.tls.get_or_insert(true);
            if !self.no_verify {
                self.ca.get_or_insert_with(|| dir.join("ca.crt"));
            }
            if self.cert.is_none() && self.key.is_none() {
                self.cert = Some(dir.join("client.crt"));
                self.key = Some(dir.join("client.key"));
            }
        }
        let tls_flag = self.ca.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.server_name.is_some()
            || self.no_verify;
        let tls = match (self.tls, probe_rules) {
            (Some(tls), _) => tls,
            (None, true) => false,
            (None, false) => tls_flag,
        };
        if self.plaintext && (tls || tls_flag) {
            return Err(invalid("cannot use --plaintext with TLS flags"));
        }
        if !tls {
            for (given, flag) in [
                (self.no_verify, "-tls-no-verify"),
                (self.ca.is_some(), "-tls-ca-cert"),
                (self.cert.is_some(), "-tls-client-cert"),
                (self.server_name.is_some(), "-tls-server-name"),
            ] {
                if given {
                    return Err(invalid(format!("specified {flag} without specifying -tls")));
                }
            }
            if !probe_rules && !self.plaintext {
                return Err(invalid(
                    "say how to connect: --dev, --plaintext, or --tls with --tls-ca-cert \
                     (and --tls-client-cert with --tls-client-key for mutual TLS)",
                ));
            }
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err(invalid(
                    "specified -tls-client-cert without specifying -tls-client-key",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "specified -tls-client-key without specifying -tls-client-cert",
                ));
            }
            _ => {}
        }
        if self.no_verify && self.ca.is_some() {
            return Err(invalid(
                "cannot specify -tls-ca-cert with -tls-no-verify (CA cert would not be used)",
            ));
        }
        if self.no_verify && self.server_name.is_some() {
            return Err(invalid(
                "cannot specify -tls-server-name with -tls-no-verify (server name would not be used)",
            ));
        }
        let connect_timeout = match self.connect_timeout {
            Some((d, given)) if d.is_zero() => {
                return Err(invalid(format!(
                    "-connect-timeout must be greater than zero (specified: {given})"
                )));
            }
            Some((d, _)) => d,
            None => default_timeout,
        };
        let tls = tls.then(|| TlsOptions {
            trust: match (self.no_verify, self.ca) {
                (true, _) => Trust::Anything,
                (false, Some(ca)) => Trust::Ca(ca),
                (false, None) => Trust::System,
            },
            identity: self.cert.zip(self.key),
        });
        Ok(ConnArgs {
            addrs: self.addrs,
            tls,
            server_name: self.server_name,
            connect_timeout,
            user_agent: self
                .user_agent
                .unwrap_or_else(|| format!("vitalsctl/{}", env!("CARGO_PKG_VERSION"))),
            headers: self.headers,
            verbose: self.verbose,
            json: self.json,
        })
    }

    /// The call deadline: given and positive, or the default.
    fn timeout(&self, flag: &str, default: Duration) -> Result<Duration, ArgsError> {
        match &self.timeout {
            Some((d, given)) if d.is_zero() => Err(invalid(format!(
                "-{flag} must be greater than zero (specified: {given})"
            ))),
            Some((d, _)) => Ok(*d),
            None => Ok(default),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Stage two: commands

/// Parses the whole command line, program name first.
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Command, ArgsError> {
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
    let mut parser = Parser::from_args(normalise(argv));
    let mut common = Common::default();
    let command = loop {
        match next(&mut parser)? {
            None => return Ok(Command::Help(None)),
            Some(Flag::Long(name)) if name == "help" => return Ok(Command::Help(None)),
            Some(Flag::Short('h')) => return Ok(Command::Help(None)),
            Some(Flag::Value(v)) => break v.string()?,
            Some(flag) => {
                if !common.take(&flag, &mut parser)? {
                    return Err(flag.unexpected("vitalsctl"));
                }
            }
        }
    };
    match command.as_str() {
        "probe" => probe(parser, common),
        "echo" => echo(parser, common),
        "metrics" => metrics(parser, common),
        "bench" => bench(parser, common),
        "certs" => certs(parser),
        "help" => {
            let topic = next(&mut parser)?.and_then(|f| match f {
                Flag::Value(v) => v.into_string().ok(),
                _ => None,
            });
            Ok(Command::Help(Some(match topic.as_deref() {
                Some("probe") => "probe",
                Some("echo") => "echo",
                Some("metrics") => "metrics",
                Some("bench") => "bench",
                Some("certs") => "certs",
                _ => "",
            })))
        }
        other => Err(invalid(format!("unknown command `{other}`"))),
    }
}

fn is_help(flag: &Flag) -> bool {
    matches!(flag, Flag::Short('h')) || matches!(flag, Flag::Long(n) if n == "help")
}

fn probe(mut parser: Parser, mut common: Common) -> Result<Command, ArgsError> {
    let mut service = String::new();
    let (mut watch, mut list, mut gzip) = (false, false, false);
    let mut targets_file = None;
    let mut concurrency = 16usize;
    while let Some(flag) = next(&mut parser)? {
        if is_help(&flag) {
            return Ok(Command::Help(Some("probe")));
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
        (true, false) => ProbeMode::Watch,
        (false, true) => ProbeMode::List,
        (false, false) => ProbeMode::Check,
    };
    if several && mode != ProbeMode::Check {
        return Err(invalid("--watch and --list take one target"));
    }
    if mode == ProbeMode::List && !service.is_empty() {
        return Err(invalid("--list lists every service; it takes no -service"));
    }
    if concurrency == 0 {
        return Err(invalid("--concurrency must be at least 1"));
    }
    Ok(Command::Probe(ProbeArgs {
        conn,
        targets_file,
        service,
        rpc_timeout,
        gzip,
        mode,
        concurrency,
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
    fn policy(self) -> Result<Option<RetryPolicy>, ArgsError> {
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
        .map(|c| retry::parse_code(c).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if codes.is_empty() {
        return Err("give at least one status code".into());
    }
    Ok(codes)
}

fn echo(mut parser: Parser, mut common: Common) -> Result<Command, ArgsError> {
    let mut request = vitals::proto::echo::EchoRequest::default();
    let mut words = Vec::new();
    let mut retry = RetryFlags::default();
    let (mut count, mut interval, mut lb, mut compression) =
        (1u64, Duration::ZERO, Policy::PickFirst, None);
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    while let Some(flag) = next(&mut parser)? {
        if is_help(&flag) {
            return Ok(Command::Help(Some("echo")));
        }
        match &flag {
            Flag::Long(name) => match name.as_str() {
                "count" => count = number(&mut parser, name)?,
                "interval" => interval = value(&mut parser, name, parse_duration)?,
                "delay" => request.delay_ms = millis(value(&mut parser, name, parse_duration)?),
                "status" => {
                    request.status_code = value(&mut parser, name, |v| {
                        retry::parse_code(v).map_err(|e| e.to_string())
                    })? as i32;
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
    Ok(Command::Echo(EchoArgs {
        conn,
        lb,
        request,
        compression,
        timeout,
        retry: retry.policy()?,
        count,
        interval,
    }))
}

fn metrics(mut parser: Parser, mut common: Common) -> Result<Command, ArgsError> {
    let mut watch = None;
    while let Some(flag) = next(&mut parser)? {
        if is_help(&flag) {
            return Ok(Command::Help(Some("metrics")));
        }
        match &flag {
            Flag::Long(name) if name == "watch" => {
                // An interval may follow, attached (`--watch=2s`) or as the next argument.
                let attached = parser.optional_value().map(|v| v.string()).transpose()?;
                let interval = match attached {
                    Some(v) => Some(v),
                    None => parser
                        .try_raw_args()
                        .and_then(|mut raw| {
                            raw.next_if(|a| a.to_str().is_some_and(|s| parse_duration(s).is_ok()))
                        })
                        .and_then(|a| a.into_string().ok()),
                };
                let interval = match interval {
                    Some(v) => parse_duration(&v).map_err(|e| invalid(format!("--watch: {e}")))?,
                    None => Duration::from_secs(1),
                };
                if interval.is_zero() {
                    return Err(invalid("--watch: the interval must be greater than zero"));
                }
                watch = Some(interval);
            }
            _ if common.take(&flag, &mut parser)? => {}
            _ => return Err(flag.unexpected("metrics")),
        }
    }
    let timeout = common.timeout("timeout", Duration::from_secs(5))?;
    let conn = common.conn(false, Duration::from_secs(5), true)?;
    if conn.addrs.len() > 1 {
        return Err(invalid("metrics reads one server: give one --addr"));
    }
    Ok(Command::Metrics(MetricsArgs {
        conn,
        timeout,
        watch,
    }))
}

fn bench(mut parser: Parser, mut common: Common) -> Result<Command, ArgsError> {
    let (mut connections, mut streams, mut threads) = (1usize, 1usize, vitals::runtime::cpus());
    let (mut requests, mut duration, mut warmup) = (None, None, Duration::ZERO);
    let (mut size, mut method) = (5usize, String::from("/vitals.echo.v1.Echo/Echo"));
    let mut status = None;
    while let Some(flag) = next(&mut parser)? {
        if is_help(&flag) {
            return Ok(Command::Help(Some("bench")));
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
                "status" => {
                    status = Some(value(&mut parser, name, |v| {
                        retry::parse_code(v).map_err(|e| e.to_string())
                    })?);
                }
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
    let load = bench::Load {
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
    Ok(Command::Bench(BenchArgs {
        conn,
        load,
        threads,
    }))
}

fn certs(mut parser: Parser) -> Result<Command, ArgsError> {
    let (mut out, mut sans, mut init) = (None, Vec::new(), false);
    while let Some(flag) = next(&mut parser)? {
        if is_help(&flag) {
            return Ok(Command::Help(Some("certs")));
        }
        match &flag {
            Flag::Long(name) if name == "out" => out = Some(PathBuf::from(parser.value()?)),
            Flag::Long(name) if name == "san" => sans.push(text(&mut parser)?),
            Flag::Value(v) if v == "init" && !init => init = true,
            _ => return Err(flag.unexpected("certs")),
        }
    }
    if !init {
        return Err(invalid("certs: the subcommand is `certs init`"));
    }
    Ok(Command::CertsInit {
        out: out.ok_or_else(|| invalid("certs init needs --out DIR"))?,
        sans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        std::iter::once("vitalsctl")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect()
    }

    fn probe_args(line: &str) -> ProbeArgs {
        match parse(args(line)) {
            Ok(Command::Probe(p)) => p,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn probe_error(line: &str) -> String {
        match parse(args(line)) {
            Err(e) => e.to_string(),
            Ok(other) => panic!("{line}: parsed as {other:?}"),
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
            assert_eq!(p.service, "s", "{line}");
            assert_eq!(p.rpc_timeout, Duration::from_secs(2), "{line}");
            assert_eq!(p.conn.connect_timeout, Duration::from_secs(1), "{line}");
            assert!(p.conn.tls.is_none(), "{line}");
        }
    }

    /// Booleans are `-tls`, `-tls=true` or `-tls=false`, as Go has them.
    #[test]
    fn go_booleans() {
        assert!(probe_args("probe -addr h:1 -tls").conn.tls.is_some());
        assert!(probe_args("probe -addr h:1 -tls=true").conn.tls.is_some());
        assert!(probe_args("probe -addr h:1 -tls=false").conn.tls.is_none());
        assert!(probe_error("probe -addr h:1 -tls=maybe").contains("not a boolean"));
    }

    /// The TLS modes: system roots, a CA, no verification, with or without a certificate.
    #[test]
    fn tls_modes() {
        let tls = |line: &str| probe_args(line).conn.tls.unwrap();
        assert_eq!(tls("probe -addr h:1 -tls").trust, Trust::System);
        assert_eq!(
            tls("probe -addr h:1 -tls -tls-no-verify").trust,
            Trust::Anything
        );
        let mtls = tls("probe -addr h:1 -tls -tls-ca-cert ca -tls-client-cert c -tls-client-key k");
        assert_eq!(mtls.trust, Trust::Ca("ca".into()));
        assert_eq!(mtls.identity, Some(("c".into(), "k".into())));
        let dev = probe_args("--dev probe");
        assert_eq!(dev.conn.addrs, [DEV_ADDR]);
        assert_eq!(
            dev.conn.tls.unwrap().trust,
            Trust::Ca(PathBuf::from(DEV_DIR).join("ca.crt"))
        );
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
            let got = probe_error(line);
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
        assert!(p.gzip);
    }

    /// Named grpc_health_probe, vitalsctl is the probe.
    #[test]
    fn as_grpc_health_probe() {
        let argv = ["/usr/bin/grpc_health_probe", "-addr=h:1"].map(OsString::from);
        assert!(matches!(parse(argv), Ok(Command::Probe(p)) if p.conn.addrs == ["h:1"]));
    }

    /// A flag's value is never rewritten, even if it looks like a flag.
    #[test]
    fn values_are_left_alone() {
        let out = normalise(args("echo --status-message -tls -addr=x -- -addr"));
        let out: Vec<_> = out.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            out,
            [
                "vitalsctl",
                "echo",
                "--status-message",
                "-tls",
                "--addr=x",
                "--",
                "-addr"
            ]
        );
    }

    /// Echo: knobs, and a retry policy from flags over the A6 defaults.
    #[test]
    fn echo_knobs_and_retry_flags() {
        let line = "--dev echo hello world --status unavailable --fail-attempts 2 --pushback 250ms \
                    --size 4KiB --delay 1s --max-attempts 9 --retry-on UNAVAILABLE,14,aborted \
                    --lb round_robin --count 3 --compress zstd";
        let Ok(Command::Echo(e)) = parse(args(line)) else {
            panic!()
        };
        assert_eq!(e.request.echo_message, "hello world");
        assert_eq!(e.request.status_code, Code::Unavailable as i32);
        assert_eq!(
            (e.request.fail_attempts, e.request.retry_pushback_ms),
            (2, 250)
        );
        assert_eq!((e.request.response_size, e.request.delay_ms), (4096, 1000));
        let retry = e.retry.unwrap();
        assert_eq!(retry.max_attempts, 5);
        assert_eq!(
            retry.retryable,
            [Code::Unavailable, Code::Unavailable, Code::Aborted]
        );
        assert_eq!(retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(e.lb, Policy::RoundRobin);
        assert_eq!(e.count, 3);
        assert_eq!(e.compression, Some(CompressionEncoding::Zstd));
        let Ok(Command::Echo(plain)) = parse(args("--dev echo hi")) else {
            panic!()
        };
        assert!(plain.retry.is_none());
    }

    /// Echo, metrics and bench need to be told how to connect.
    #[test]
    fn non_probe_commands_need_a_transport() {
        for line in ["echo hi", "metrics", "bench"] {
            assert!(probe_error(line).contains("say how to connect"), "{line}");
        }
        assert!(matches!(
            parse(args("--plaintext metrics")),
            Ok(Command::Metrics(_))
        ));
        assert!(probe_error("--plaintext --tls metrics").contains("--plaintext"));
    }

    /// `metrics --watch` takes an optional interval, attached or next.
    #[test]
    fn metrics_watch_interval() {
        let watch = |line: &str| match parse(args(line)) {
            Ok(Command::Metrics(m)) => m.watch,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(watch("--dev metrics"), None);
        assert_eq!(watch("--dev metrics --watch"), Some(Duration::from_secs(1)));
        assert_eq!(
            watch("--dev metrics --watch 2s"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watch("--dev metrics -watch=500ms --json"),
            Some(Duration::from_millis(500))
        );
    }

    /// Bench defaults to 10 s, and refuses a count with a duration.
    #[test]
    fn bench_limits() {
        let Ok(Command::Bench(b)) = parse(args(
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
        assert!(probe_error("--dev bench --requests 5 --duration 1s").contains("not both"));
    }

    /// Go durations, sizes and headers.
    #[test]
    fn values() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("-2s"), Ok(Duration::ZERO));
        for bad in ["", "5", "1x", "s", "1s2"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("5"), Ok(5));
        assert!(parse_size("4 apples").is_err());
        assert_eq!(parse_header("X-Id:  7 "), Ok(("x-id".into(), "7".into())));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad key: 1").is_err());
    }
}

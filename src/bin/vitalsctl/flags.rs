//! What every command's flags share: the Go-style spelling ([`normalise`]), the reading of
//! one flag and its value, the value parsers, and the connection flags, in two stages: as
//! given ([`Common`]), then checked ([`ConnArgs`]).
//!
//! `probe` is a drop-in for grpc_health_probe, whose flags are Go flags: one dash or two,
//! `-flag=value` or `-flag value`, booleans as `-tls` or `-tls=false`. [`normalise`] turns
//! single-dash long flags into double-dash ones before lexopt reads them (lexopt would read
//! `-addr` as `-a -d -d -r`), so every command accepts both spellings.

use std::{ffi::OsString, path::PathBuf, sync::Arc, time::Duration};

use lexopt::{Arg, Parser, ValueExt};
use tonic::{Code, metadata::MetadataKey};
use vitals::{
    client::{Dial, TlsOptions, Trust, retry},
    error::chain,
    pki::{DEV_ADDR, DEV_DIR},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Parse(#[from] lexopt::Error),
    /// Not a failure: `-version` asks for the version, before any other flag is checked
    /// (as grpc_health_probe has it).
    #[error("the version was asked for")]
    Version,
}

pub fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

/// Long flags and whether they take a value, for [`normalise`]. Each command lists its own.
pub type Table = &'static [(&'static str, bool)];

/// The connection flags, which every command but `certs` takes, and `--help`.
pub const FLAGS: Table = &[
    ("addr", true),
    ("connect-timeout", true),
    ("dev", false),
    ("header", true),
    ("help", false),
    ("json", false),
    ("plaintext", false),
    ("rpc-header", true),
    ("rpc-timeout", true),
    ("timeout", true),
    ("tls", false),
    ("tls-ca-cert", true),
    ("tls-client-cert", true),
    ("tls-client-key", true),
    ("tls-no-verify", false),
    ("tls-server-name", true),
    ("user-agent", true),
    ("verbose", false),
    ("version", false),
];

/// Rewrites Go-style single-dash long flags (`-addr=x`, `-tls`) as double-dash ones. Only
/// flag names in `tables` are touched, never a flag's value, and nothing after `--`.
pub fn normalise(args: Vec<OsString>, tables: &[Table]) -> Vec<OsString> {
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
        let takes_value = tables
            .iter()
            .flat_map(|table| table.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v);
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

/// A status code by name or number, as [`retry::parse_code`] reads it.
pub fn parse_code(text: &str) -> Result<Code, String> {
    retry::parse_code(text).map_err(|e| e.to_string())
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

/// A flag or a value, owned, so the parser can be borrowed again for the flag's value.
pub enum Flag {
    Long(String),
    Short(char),
    Value(OsString),
}

impl Flag {
    /// `-h` or `--help`.
    pub fn is_help(&self) -> bool {
        matches!(self, Flag::Short('h')) || matches!(self, Flag::Long(n) if n == "help")
    }

    pub fn unexpected(&self, command: &str) -> Error {
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

pub fn next(parser: &mut Parser) -> Result<Option<Flag>, Error> {
    Ok(parser.next()?.map(|arg| match arg {
        Arg::Long(name) => Flag::Long(name.to_string()),
        Arg::Short(c) => Flag::Short(c),
        Arg::Value(v) => Flag::Value(v),
    }))
}

pub fn text(parser: &mut Parser) -> Result<String, Error> {
    Ok(parser.value()?.string()?)
}

pub fn value<T>(
    parser: &mut Parser,
    flag: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, Error> {
    let v = text(parser)?;
    parse(&v).map_err(|e| invalid(format!("--{flag}: {e}")))
}

pub fn number<T: std::str::FromStr>(parser: &mut Parser, flag: &str) -> Result<T, Error> {
    value(parser, flag, |v| {
        v.parse()
            .map_err(|_| format!("`{v}` is not a whole number"))
    })
}

/// A boolean flag: `--tls`, or `--tls=false`.
pub fn boolean(parser: &mut Parser, flag: &str) -> Result<bool, Error> {
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
pub struct Common {
    pub dev: bool,
    pub addrs: Vec<String>,
    tls: Option<bool>,
    plaintext: bool,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
    no_verify: bool,
    connect_timeout: Option<(Duration, String)>,
    /// The call deadline and its spelling; see [`Common::timeout`].
    pub timeout: Option<(Duration, String)>,
    user_agent: Option<String>,
    headers: Vec<(String, String)>,
    verbose: bool,
    json: bool,
}

impl Common {
    /// Takes `flag` if it is a connection flag.
    pub fn take(&mut self, flag: &Flag, parser: &mut Parser) -> Result<bool, Error> {
        let duration = |parser: &mut Parser, name: &str| -> Result<(Duration, String), Error> {
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
                "version" => return Err(Error::Version),
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
    pub fn conn(
        mut self,
        probe_rules: bool,
        default_timeout: Duration,
        default_addr: bool,
    ) -> Result<ConnArgs, Error> {
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
    pub fn timeout(&self, flag: &str, default: Duration) -> Result<Duration, Error> {
        match &self.timeout {
            Some((d, given)) if d.is_zero() => Err(invalid(format!(
                "-{flag} must be greater than zero (specified: {given})"
            ))),
            Some((d, _)) => Ok(*d),
            None => Ok(default),
        }
    }
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
    /// A file that cannot be used is said on stderr and is exit 1, as grpc_health_probe has
    /// it.
    pub fn dialer(&self) -> Result<Dial, u8> {
        let mut dial = Dial::plaintext("");
        if let Some(tls) = &self.tls {
            let config = tls.client_config().map_err(|err| {
                eprintln!(
                    "error: failed to initialize tls credentials: {}",
                    chain(&err)
                );
                err.exit_code()
            })?;
            dial.tls = Some(Arc::new(config));
        }
        dial.server_name = self.server_name.clone();
        dial.connect_timeout = self.connect_timeout;
        dial.user_agent = Some(self.user_agent.clone());
        Ok(dial)
    }

    /// Connects to the one `--addr` (metrics, rotate); a failure is said on stderr and is
    /// its exit code.
    pub async fn open_one(&self) -> Result<vitals::client::Conn, u8> {
        let dial = self.dialer()?.target(&self.addrs[0]);
        dial.open().await.map_err(|err| crate::failed(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Command,
        tests::{argv, error},
    };

    fn probe_conn(line: &str) -> ConnArgs {
        match crate::parse(argv(line)) {
            Ok(Command::Probe(p)) => p.conn,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// Booleans are `-tls`, `-tls=true` or `-tls=false`, as Go has them.
    #[test]
    fn go_booleans() {
        assert!(probe_conn("probe -addr h:1 -tls").tls.is_some());
        assert!(probe_conn("probe -addr h:1 -tls=true").tls.is_some());
        assert!(probe_conn("probe -addr h:1 -tls=false").tls.is_none());
        assert!(error("probe -addr h:1 -tls=maybe").contains("not a boolean"));
    }

    /// The TLS modes: system roots, a CA, no verification, with or without a certificate.
    #[test]
    fn tls_modes() {
        let tls = |line: &str| probe_conn(line).tls.unwrap();
        assert_eq!(tls("probe -addr h:1 -tls").trust, Trust::System);
        assert_eq!(
            tls("probe -addr h:1 -tls -tls-no-verify").trust,
            Trust::Anything
        );
        let mtls = tls("probe -addr h:1 -tls -tls-ca-cert ca -tls-client-cert c -tls-client-key k");
        assert_eq!(mtls.trust, Trust::Ca("ca".into()));
        assert_eq!(mtls.identity, Some(("c".into(), "k".into())));
        let dev = probe_conn("--dev probe");
        assert_eq!(dev.addrs, [DEV_ADDR]);
        assert_eq!(
            dev.tls.unwrap().trust,
            Trust::Ca(PathBuf::from(DEV_DIR).join("ca.crt"))
        );
    }

    /// A flag's value is never rewritten, even if it looks like a flag.
    #[test]
    fn values_are_left_alone() {
        let echo: Table = &[("status-message", true)];
        let out = normalise(
            argv("echo --status-message -tls -addr=x -- -addr"),
            &[FLAGS, echo],
        );
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

    /// Echo, metrics and bench need to be told how to connect.
    #[test]
    fn non_probe_commands_need_a_transport() {
        for line in ["echo hi", "metrics", "bench"] {
            assert!(error(line).contains("say how to connect"), "{line}");
        }
        assert!(matches!(
            crate::parse(argv("--plaintext metrics")),
            Ok(Command::Metrics(_))
        ));
        assert!(error("--plaintext --tls metrics").contains("--plaintext"));
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
